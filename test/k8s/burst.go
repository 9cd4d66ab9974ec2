package k8s

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vnet-cni/vnet-cni/cns"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
	"github.com/vnet-cni/vnet-cni/test/stack"
)

// BurstResult is what one API-server burst measured.
type BurstResult struct {
	Pods   int
	Pull   time.Duration // between the last pod bound and the ADDs
	Failed int
	// FreeAtADDs is Available + Pending when the ADDs started: at least Pods means the write
	// for the burst had started (or finished) before any ADD arrived.
	FreeAtADDs int
	NICWrites  int             // NIC writes from the first pod bound to the last ADD answered
	BindTook   time.Duration   // creating the bound pods in the API server
	MaxPause   time.Duration   // the longest pause between two creates answered
	Done       time.Duration   // from the last pod bound to the last ADD answered
	Waits      []time.Duration // each ADD's RequestIPs time, sorted
}

// Quantile returns the q-quantile of the ADD waits.
func (r BurstResult) Quantile(q float64) time.Duration {
	if len(r.Waits) == 0 {
		return 0
	}
	return r.Waits[min(int(q*float64(len(r.Waits))), len(r.Waits)-1)]
}

func (r BurstResult) String() string {
	return fmt.Sprintf("%d pods bound in %s (longest pause %s); ADDs %s later, %d addresses free or pending then: %d failed, %d NIC writes, all done %s after binding; ADD wait p0 %s p50 %s p90 %s p99 %s max %s",
		r.Pods, r.BindTook.Round(time.Millisecond), r.MaxPause.Round(time.Millisecond), r.Pull, r.FreeAtADDs, r.Failed, r.NICWrites, r.Done.Round(time.Millisecond),
		r.Quantile(0).Round(time.Millisecond), r.Quantile(0.5).Round(time.Millisecond), r.Quantile(0.9).Round(time.Millisecond),
		r.Quantile(0.99).Round(time.Millisecond), r.Quantile(1).Round(time.Millisecond))
}

// PodBurst binds pods Pod objects to an emulated node (spec.nodeName set; no kubelet) in a
// real API server while an in-process cns watches that node, then, pull later (an image
// pull), sends all their RequestIPs at once. mockarm takes writeLatency per NIC write; the
// pool starts at its low watermark (8 free), as in the bench's burst without an API server.
// settle and hold are cns's --demand-settle and --demand-hold (zero: the defaults).
func PodBurst(t testing.TB, pods int, pull, writeLatency, settle, hold time.Duration) BurstResult {
	t.Helper()
	const node, ns, warm = "burst-node", "burst", 8
	cp := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cp.Namespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	s := stack.Start(t, stack.Options{
		Mock: func(m *mockarm.Config) { m.Latency = writeLatency },
		Config: func(c *cns.Config) {
			c.Kube.Kubeconfig, c.Kube.NodeName = cp.AdminKubeconfig, node
			c.Pool.DemandSettle, c.Pool.DemandHold = settle, hold
		},
	})
	s.WaitFor("initial batch", func(p *cnsv1.GetPoolResponse) bool {
		return p.GetCounts().GetAvailable() >= 16 && p.GetCounts().GetPending() == 0
	})
	for i := range warm { // take 8 of the initial 16: the pool sits at min free
		if _, err := s.Request(ctx, fmt.Sprint("warm", i)); err != nil {
			t.Fatal(err)
		}
	}
	s.WaitFor("pool at min free", func(p *cnsv1.GetPoolResponse) bool {
		return p.GetCounts().GetAvailable() == warm && p.GetCounts().GetPending() == 0
	})

	// A client that does not throttle: the burst is the API server's, not client-go's.
	rc := rest.CopyConfig(cp.Admin)
	rc.QPS, rc.Burst = 5000, 5000
	client := kubernetes.NewForConfigOrDie(rc)
	writes0 := s.Mock.Stats().Writes
	uids := make([]string, pods)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	var answered []time.Time
	start := time.Now()
	sem := make(chan struct{}, 32)
	for i := range pods {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			p, err := client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint("p", i)},
				Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "pause"}}}}, metav1.CreateOptions{})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			uids[i] = string(p.UID)
			answered = append(answered, time.Now())
		})
	}
	wg.Wait()
	bound := time.Now()
	if len(errs) > 0 {
		t.Fatalf("create %d of %d pods failed, first: %v", len(errs), pods, errs[0])
	}
	r := BurstResult{Pods: pods, Pull: pull, BindTook: bound.Sub(start)}
	slices.SortFunc(answered, time.Time.Compare)
	for i := 1; i < len(answered); i++ {
		r.MaxPause = max(r.MaxPause, answered[i].Sub(answered[i-1]))
	}

	<-time.After(time.Until(bound.Add(pull))) // the image pull: the scenario's delay, not a wait for state
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	pool, err := s.Pool.GetPool(pctx, &cnsv1.GetPoolRequest{})
	pcancel()
	if err != nil {
		t.Fatal(err)
	}
	r.FreeAtADDs = int(pool.GetCounts().GetAvailable() + pool.GetCounts().GetPending())
	waits := make([]time.Duration, pods)
	for i := range pods {
		wg.Go(func() {
			t0 := time.Now()
			_, err := s.IPAM.RequestIPs(ctx, &cnsv1.RequestIPsRequest{ContainerId: fmt.Sprint("c", i), Ifname: "eth0",
				PodNamespace: ns, PodName: fmt.Sprint("p", i), PodUid: uids[i]})
			waits[i] = time.Since(t0)
			if err != nil {
				mu.Lock()
				r.Failed++
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	r.Done = time.Since(bound)
	r.NICWrites = s.Mock.Stats().Writes - writes0
	slices.Sort(waits)
	r.Waits = waits
	if len(errs) > 0 {
		t.Logf("first ADD error: %v", errs[0])
	}
	return r
}
