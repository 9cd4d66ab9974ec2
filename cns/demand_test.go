package cns

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vnet-cni/vnet-cni/cns/k8s"
	"github.com/vnet-cni/vnet-cni/ipampool"
)

// boundPods is a PodSource the test binds pods into, one event at a time, as an informer
// delivers them.
type boundPods struct {
	mu      sync.Mutex
	pods    []k8s.Pod
	changed time.Time
}

func (b *boundPods) bind(p k8s.Pod) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pods, b.changed = append(b.pods, p), time.Now()
}
func (b *boundPods) Snapshot() ([]k8s.Pod, time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]k8s.Pod(nil), b.pods...), b.changed, true
}
func (b *boundPods) Cached(string, string) (k8s.Pod, bool) { return k8s.Pod{}, true }
func (b *boundPods) Live(context.Context, string, string) (k8s.Pod, bool, error) {
	return k8s.Pod{}, true, nil
}

// 200 pods bound one every 2 ms, their requests 300 ms after the last: one NIC write, sized
// for all of them plus the warm buffer, started before the requests, and no request waits
// a whole NIC write (1 s). Virtual time: the figures are exact, not the machine's.
func TestBoundPodBurstStartsOneWriteBeforeTheRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const pods = 200
		f := newFakeNIC()
		f.inject(fakeFault{op: "update", delay: time.Second})
		m := startManager(t, testConfig(), f, newMemStore())
		src := &boundPods{}
		m.UsePods(src)
		time.Sleep(5 * time.Second) // the initial batch lands
		synctest.Wait()
		if _, errs := requestAll(m, "warm", 8); errs[0] != nil {
			t.Fatal(errs[0])
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		writes := len(f.writeLog())
		if c := m.counts(); c.Available != 8 || c.Pending != 0 {
			t.Fatalf("pool before the burst: %+v, want 8 available", c)
		}

		for i := range pods {
			src.bind(k8s.Pod{Namespace: "ns", Name: fmt.Sprint("p", i), UID: fmt.Sprint("u", i)})
			m.poke()
			time.Sleep(2 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond) // the image pull
		start := time.Now()
		waits := make([]time.Duration, pods)
		var wg sync.WaitGroup
		for i := range pods {
			wg.Go(func() {
				t0 := time.Now()
				_, err := m.RequestIP(context.Background(), ipampool.Owner{Key: ipampool.Key{ContainerID: fmt.Sprint("c", i), IfName: "eth0"},
					PodNamespace: "ns", PodName: fmt.Sprint("p", i), PodUID: fmt.Sprint("u", i)})
				if err != nil {
					t.Error(err)
				}
				waits[i] = time.Since(t0)
			})
		}
		wg.Wait()
		log := f.writeLog()[writes:]
		if len(log) != 1 || log[0].Add < pods {
			t.Fatalf("NIC writes for the burst: %+v, want one adding at least %d", log, pods)
		}
		for i, w := range waits {
			if w >= time.Second {
				t.Fatalf("request %d waited %s: a whole NIC write, so the write had not started before it", i, w)
			}
		}
		t.Logf("one write adding %d; all requests answered %s after they started", log[0].Add, time.Since(start))
	})
}
