package vnet_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vnet-cni/vnet-cni/plugin"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
	"github.com/vnet-cni/vnet-cni/test/vnet"
)

// report appends a line of figures to $VNET_REPORT (make test prints it) and the test log.
func report(t *testing.T, format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	t.Log(line)
	if path := os.Getenv("VNET_REPORT"); path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintln(f, line)
			f.Close()
		}
	}
}

type slot struct {
	ns   ns.NetNS
	id   string // live sandbox, "" when none
	ip   netip.Addr
	gen  int
	name string
}

// liveSet is the churn's record of live pods, shared by the workers and the checker, so that
// "no address on two live pods" is checked while the churn runs, not only at its end.
type liveSet struct {
	mu     sync.Mutex
	byAddr map[netip.Addr]string // address -> live container ID
	checks atomic.Int64          // comparisons made during the churn
}

// added records a successful ADD and reports a pod that already holds the address.
func (l *liveSet) added(id string, ip netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.checks.Add(1)
	if other, dup := l.byAddr[ip]; dup && other != id {
		return fmt.Errorf("ADD of %s got %s, held by live pod %s", id, ip, other)
	}
	l.byAddr[ip] = id
	return nil
}

// removed records a completed DEL.
func (l *liveSet) removed(ip netip.Addr) {
	l.mu.Lock()
	delete(l.byAddr, ip)
	l.mu.Unlock()
}

func (l *liveSet) snapshot() map[netip.Addr]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[netip.Addr]string, len(l.byAddr))
	for a, id := range l.byAddr {
		out[a] = id
	}
	return out
}

// checkCNS compares cns's assignments with the live pods: an address that a pod held both
// before and after the listing and that cns lists for another pod has been handed out twice.
// (A pod live across the whole listing held its address throughout; cns being down, killed
// by the chaos, skips the round.)
func (l *liveSet) checkCNS(ctx context.Context, pool cnsv1grpc.PoolServiceClient) error {
	before := l.snapshot()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	allocs, err := pool.ListAllocations(cctx, &cnsv1.ListAllocationsRequest{})
	if err != nil {
		return nil
	}
	after := l.snapshot()
	l.checks.Add(1)
	for _, a := range allocs.GetAllocations() {
		ip, err := netip.ParseAddr(a.GetAddress())
		if err != nil {
			return fmt.Errorf("cns lists an unparsable address %q", a.GetAddress())
		}
		if id := before[ip]; id != "" && after[ip] == id && a.GetContainerId() != id {
			return fmt.Errorf("cns assigns %s to %s while live pod %s holds it", ip, a.GetContainerId(), id)
		}
	}
	return nil
}

// churn runs ops ADD/DEL operations from workers concurrent workers while chaos() strikes
// every 100-400 ms. "No address on two live pods" is checked continuously: after every
// successful ADD against the live pods, and by a checker comparing cns's assignments with
// them. At the end every invariant of the pool is checked against the live pods.
func churn(t *testing.T, tag string, chaos func(v *vnet.VNet) error, what string) {
	const workers, slotsPerWorker, minOps, minKills = 4, 6, 1000, 10
	v := start(t, tag, 1, "--cooldown", "1s", "--release-delay", "1s", "--reconcile-interval", "500ms", "--request-wait", "5s")
	n := v.Nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	slots := make([][]*slot, workers)
	for w := range workers {
		for s := range slotsPerWorker {
			name := fmt.Sprintf("w%ds%d", w, s)
			pns, err := n.NewPodNS(name)
			if err != nil {
				t.Fatal(err)
			}
			slots[w] = append(slots[w], &slot{ns: pns, name: name})
		}
	}
	var ops, addFail, kills atomic.Int64
	live := &liveSet{byAddr: map[netip.Addr]string{}}
	stop := make(chan struct{})
	var chaosWG sync.WaitGroup
	chaosWG.Add(2)
	go func() { // the continuous checker
		defer chaosWG.Done()
		tick := time.NewTicker(50 * time.Millisecond) // a sampling rate, not a wait for state
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := live.checkCNS(ctx, n.Pool); err != nil {
				t.Errorf("during the churn: %v", err)
				return
			}
		}
	}()
	go func() {
		defer chaosWG.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(100+rand.IntN(300)) * time.Millisecond): // chaos schedule
			}
			if err := chaos(v); err != nil {
				t.Errorf("chaos: %v", err)
				return
			}
			kills.Add(1)
		}
	}()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && (ops.Load() < minOps || kills.Load() < minKills) {
				s := slots[w][rand.IntN(slotsPerWorker)]
				if s.id == "" {
					s.gen++
					id := fmt.Sprintf("%s%sg%d", tag, s.name, s.gen)
					ip, err := n.Attach(ctx, id, s.ns, s.name)
					ops.Add(1)
					if err != nil {
						// A runtime deletes a sandbox whose ADD failed, then tries a new one.
						addFail.Add(1)
						retryDel(ctx, t, n, id, s.ns)
						continue
					}
					if err := live.added(id, ip); err != nil {
						t.Errorf("during the churn: %v", err)
					}
					s.id, s.ip = id, ip
				} else {
					retryDel(ctx, t, n, s.id, s.ns)
					live.removed(s.ip)
					ops.Add(1)
					s.id = ""
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	chaosWG.Wait()
	if ctx.Err() != nil {
		t.Fatalf("churn did not finish: %d ops, %d kills", ops.Load(), kills.Load())
	}
	if err := v.Nodes[0].StartCNSIfStopped(); err != nil {
		t.Fatal(err)
	}

	if t.Failed() {
		t.FailNow()
	}
	// Invariant 1: no address held by two live pods (checked all along; once more at the end).
	liveAt := map[netip.Addr]string{}
	var liveIDs []string
	for _, ws := range slots {
		for _, s := range ws {
			if s.id == "" {
				continue
			}
			if other, dup := liveAt[s.ip]; dup {
				t.Fatalf("%s held by live pods %s and %s", s.ip, other, s.id)
			}
			liveAt[s.ip] = s.id
			liveIDs = append(liveIDs, s.id)
		}
	}
	// Invariant 2: every live pod's address is Assigned to it in cns and is on the NIC.
	allocs, err := n.Pool.ListAllocations(ctx, &cnsv1.ListAllocationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]string{}
	for _, a := range allocs.GetAllocations() {
		held[a.GetContainerId()] = a.GetAddress()
	}
	nic, _ := v.Mock.NICAddrs(v.MockCfg.Subscription, v.MockCfg.ResourceGroup, n.NIC)
	for ip, id := range liveAt {
		if held[id] != ip.String() {
			t.Fatalf("live pod %s has %s, cns holds %q for it", id, ip, held[id])
		}
		if !slices.Contains(nic, ip) {
			t.Fatalf("live pod %s's address %s is not on the NIC", id, ip)
		}
	}
	// Invariant 3: after GC with the true live set and the release delay, cns holds exactly
	// the live pods and the NIC holds assigned + free within the watermarks.
	if err := n.GC(ctx, liveIDs); err != nil {
		t.Fatalf("GC: %v", err)
	}
	p := waitPool(t, n, "converged", func(c *cnsv1.PoolCounts) bool {
		return int(c.GetAssigned()) == len(liveAt) && c.GetCooldown() == 0 && c.GetPendingRelease() == 0 && c.GetPending() == 0 &&
			c.GetAvailable() >= 8 && c.GetAvailable() <= 24
	})
	nic, _ = v.Mock.NICAddrs(v.MockCfg.Subscription, v.MockCfg.ResourceGroup, n.NIC)
	if c := p.GetCounts(); len(nic) != int(c.GetAssigned()+c.GetAvailable()) {
		t.Fatalf("NIC holds %d ip configurations, pool %v", len(nic), c)
	}
	// Invariant 4: no orphan host veth.
	veths, err := n.HostVeths()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, id := range liveIDs {
		want = append(want, plugin.HostVethName(id, "eth0"))
	}
	slices.Sort(veths)
	slices.Sort(want)
	if !slices.Equal(veths, want) {
		t.Fatalf("host veths %v, want %v", veths, want)
	}
	report(t, "crash-churn (%s): %d ADD/DEL ops from %d workers, %d %s, %d ADDs failed and retried; invariants held: "+
		"unique live addresses (%d checks during the churn), %d live pods assigned in cns and on the NIC, NIC = %d assigned + %d free after GC, no orphan veth",
		what, ops.Load(), workers, kills.Load(), what, addFail.Load(), live.checks.Load(), len(liveAt), p.GetCounts().GetAssigned(), p.GetCounts().GetAvailable())
}

func retryDel(ctx context.Context, t *testing.T, n *vnet.Node, id string, pns ns.NetNS) {
	for attempt := 0; ; attempt++ {
		err := n.Detach(ctx, id, pns)
		if err == nil {
			return
		}
		if attempt == 50 || ctx.Err() != nil {
			t.Errorf("DEL %s never succeeded: %v", id, err)
			return
		}
		time.Sleep(100 * time.Millisecond) // a runtime's retry interval
	}
}

func TestCrashChurnCNSKilled(t *testing.T) {
	churn(t, "churncns", func(v *vnet.VNet) error {
		n := v.Nodes[0]
		n.KillCNS()
		return n.StartCNS()
	}, "cns SIGKILLs")
}

func TestCrashChurnMockarmRestarted(t *testing.T) {
	churn(t, "churnarm", func(v *vnet.VNet) error { return v.RestartMock() }, "mockarm restarts")
}
