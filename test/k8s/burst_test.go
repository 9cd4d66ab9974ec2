package k8s

import (
	"testing"
	"time"
)

// Pods bound to the node in the API server are demand: cns starts one NIC write sized for
// the whole burst before the ADDs arrive, so no ADD triggers a write of its own. (Timings are
// reported, not asserted: `make bench` records them.) The window is wider than cns's default
// (settle 300 ms, hold 3 s, not 100 ms and 1 s): beside the other test packages the API
// server's answers to the 200 creates paused for over 100 ms and took close to a second (seen
// in CI), which cns rightly read as the burst's end. The ADDs come 1 s after the last create
// (an image pull), so a write that waits out the window has started before them.
func TestBoundPodsBurstIsOneNICWriteStartedBeforeTheADDs(t *testing.T) {
	const settle, hold = 300 * time.Millisecond, 3 * time.Second
	r := PodBurst(t, 200, time.Second, time.Second, settle, hold)
	t.Log(r)
	if r.Failed > 0 {
		t.Errorf("%d of %d ADDs failed", r.Failed, r.Pods)
	}
	if r.MaxPause > settle || r.BindTook > hold {
		// The burst paused longer than the window, or outlasted the hold: by design it becomes
		// two writes (one more, never a failed ADD). What the test is for did not happen; say so.
		t.Logf("the creates paused %s in %s, beyond the %s window or the %s hold: the burst was two bursts", r.MaxPause, r.BindTook, settle, hold)
		if r.NICWrites > 2 {
			t.Errorf("%d NIC writes for a burst split once, want at most 2", r.NICWrites)
		}
		return
	}
	if r.FreeAtADDs < r.Pods {
		t.Errorf("when the ADDs started only %d addresses were free or pending, want >= %d: the write for the bound pods had not started", r.FreeAtADDs, r.Pods)
	}
	if r.NICWrites > 1 {
		t.Errorf("%d NIC writes for the burst, want at most 1 (the write should be sized for every bound pod)", r.NICWrites)
	}
}
