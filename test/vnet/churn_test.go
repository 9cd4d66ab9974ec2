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

// churn runs ops ADD/DEL operations from workers concurrent workers while chaos() strikes
// every 100-400 ms, then checks every invariant of the pool against the live pods.
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
	stop := make(chan struct{})
	var chaosWG sync.WaitGroup
	chaosWG.Add(1)
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
					s.id, s.ip = id, ip
				} else {
					retryDel(ctx, t, n, s.id, s.ns)
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

	// Invariant 1: no address held by two live pods.
	live := map[netip.Addr]string{}
	var liveIDs []string
	for _, ws := range slots {
		for _, s := range ws {
			if s.id == "" {
				continue
			}
			if other, dup := live[s.ip]; dup {
				t.Fatalf("%s held by live pods %s and %s", s.ip, other, s.id)
			}
			live[s.ip] = s.id
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
	for ip, id := range live {
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
		return int(c.GetAssigned()) == len(live) && c.GetCooldown() == 0 && c.GetPendingRelease() == 0 && c.GetPending() == 0 &&
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
		"unique live addresses, %d live pods assigned in cns and on the NIC, NIC = %d assigned + %d free after GC, no orphan veth",
		what, ops.Load(), workers, kills.Load(), what, addFail.Load(), len(live), p.GetCounts().GetAssigned(), p.GetCounts().GetAvailable())
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
