package k8s

import (
	"testing"
	"time"
)

// Pods bound to the node in the API server are demand: cns starts one NIC write sized for
// the whole burst before the ADDs arrive, so no ADD triggers a write of its own. (Timings are
// reported, not asserted: `make bench` records them.) The settle window is 300 ms, not the
// default 100: beside the other test packages, the API server's answers to the 200 creates
// paused for over 100 ms (seen once in CI), which cns rightly read as the burst's end.
func TestBoundPodsBurstIsOneNICWriteStartedBeforeTheADDs(t *testing.T) {
	const settle = 300 * time.Millisecond
	r := PodBurst(t, 200, 300*time.Millisecond, time.Second, settle)
	t.Log(r)
	if r.Failed > 0 {
		t.Errorf("%d of %d ADDs failed", r.Failed, r.Pods)
	}
	if r.MaxPause > settle {
		// The burst paused longer than the window: by design it becomes two writes (one more,
		// never a failed ADD). What the test is for did not happen; say so.
		t.Logf("the creates paused %s, longer than the %s window: the burst was two bursts", r.MaxPause, settle)
		if r.NICWrites > 2 {
			t.Errorf("%d NIC writes for a burst that paused once, want at most 2", r.NICWrites)
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
