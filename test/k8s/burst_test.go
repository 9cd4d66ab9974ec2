package k8s

import (
	"testing"
	"time"
)

// Pods bound to the node in the API server are demand: cns starts one NIC write sized for
// the whole burst before the ADDs arrive, so no ADD triggers a write of its own. (Timings are
// reported, not asserted: `make bench` records them.)
func TestBoundPodsBurstIsOneNICWriteStartedBeforeTheADDs(t *testing.T) {
	r := PodBurst(t, 200, 300*time.Millisecond, time.Second)
	t.Log(r)
	if r.Failed > 0 {
		t.Errorf("%d of %d ADDs failed", r.Failed, r.Pods)
	}
	if r.FreeAtADDs < r.Pods {
		t.Errorf("when the ADDs started only %d addresses were free or pending, want >= %d: the write for the bound pods had not started", r.FreeAtADDs, r.Pods)
	}
	if r.NICWrites > 1 {
		t.Errorf("%d NIC writes for the burst, want at most 1 (the write should be sized for every bound pod)", r.NICWrites)
	}
}
