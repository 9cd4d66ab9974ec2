package cns_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vnet-cni/vnet-cni/cns"
	"github.com/vnet-cni/vnet-cni/cns/cloud"
	"github.com/vnet-cni/vnet-cni/cns/cloud/azure"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
	"github.com/vnet-cni/vnet-cni/test/stack"
)

func TestThrottledCloudIsUnavailableThenPoolRecovers(t *testing.T) {
	s := stack.Start(t, stack.Options{Config: func(c *cns.Config) {
		c.Pool.RequestWait = time.Second
		c.Pool.Limits.MinFree, c.Pool.Limits.MaxFree = 8, 100
	}})
	p := s.WaitFor("warm pool", func(p *cnsv1.GetPoolResponse) bool { return p.GetCounts().GetAvailable() >= 8 })
	// Every write is throttled with a Retry-After longer than azcore's 2 s cap, so only cns's
	// own backoff stands between it and the API.
	const retryAfter = 3
	if err := s.Mock.Inject(mockarm.Fault{Op: "put-nic", Status: 429, Code: "SubscriptionRequestsThrottled", RetryAfter: retryAfter, Count: 1000}); err != nil {
		t.Fatal(err)
	}
	ctx := s.Ctx()
	drained := int(p.GetCounts().GetAvailable())
	for i := range drained { // empty the pool so cns must grow through the throttling
		if _, err := s.Request(ctx, fmt.Sprint("drain-", i)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.Request(ctx, "starved")
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "throttled") {
		t.Fatalf("request on an empty pool under throttling: %v, want Unavailable naming the throttling", err)
	}
	// That the attempts are spaced by at least Retry-After is proven on virtual time by
	// TestThrottledWritesAreSpacedByRetryAfter; here a few go through the real client.
	seen := s.Mock.Stats().Faults
	waitStat(t, s, func(st mockarm.Stats) bool { return st.Faults >= seen+2 })
	s.Mock.ClearFaults()
	p = s.WaitFor("recovery", func(p *cnsv1.GetPoolResponse) bool {
		return p.GetCounts().GetAvailable() >= 8 && p.GetLastError() == ""
	})
	if int(p.GetCounts().GetAssigned()) != drained {
		t.Fatalf("assignments changed during the fault: %v", p.GetCounts())
	}
	if _, err := s.Request(ctx, "after"); err != nil {
		t.Fatalf("request after recovery: %v", err)
	}
}

// waitStat polls mockarm's counters until cond holds, failing after 20 s.
func waitStat(t *testing.T, s *stack.Stack, cond func(mockarm.Stats) bool) mockarm.Stats {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if st := s.Mock.Stats(); cond(st) {
			return st
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("mockarm counters never reached the condition: %+v", s.Mock.Stats())
	return mockarm.Stats{}
}

// The fault matrix runs against both node shapes: a standalone VM's NIC (NIC PUT) and a
// scale-set instance's (scale-set VM update).
func TestFailedWritesRecoverByThemselves(t *testing.T) {
	for _, shape := range []struct {
		name     string
		scaleSet bool
	}{{"standalone", false}, {"scale-set", true}} {
		testFailedWritesRecover(t, shape.name, shape.scaleSet)
	}
}

func testFailedWritesRecover(t *testing.T, shape string, scaleSet bool) {
	for _, f := range []mockarm.Fault{
		{Op: "put-nic", FailLRO: true, Count: 2},
		{Op: "put-nic", FailLRO: true, KeepConfigs: true, Count: 2},
		{Op: "put-nic", Status: 500, Count: 4},
		{Op: "put-nic", Status: 412, Code: "PreconditionFailed", Count: 2},
		{Op: "get-nic", Status: 503, Count: 3},
	} {
		t.Run(fmt.Sprintf("%s/%s-%d-%s-lro%v-keep%v", shape, f.Op, f.Status, f.Code, f.FailLRO, f.KeepConfigs), func(t *testing.T) {
			s := stack.Start(t, stack.Options{ScaleSet: scaleSet, Config: func(c *cns.Config) { c.Pool.Limits.MinFree = 8 }})
			s.WaitFor("warm pool", func(p *cnsv1.GetPoolResponse) bool { return p.GetCounts().GetAvailable() >= 8 })
			if err := s.Mock.Inject(f); err != nil {
				t.Fatal(err)
			}
			ctx := s.Ctx()
			// Take 20 addresses: more than the warm pool, so cns must write through the fault.
			for i := range 20 {
				if _, err := s.Request(ctx, fmt.Sprint("pod-", i)); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
			}
			p := s.WaitFor("pool refilled", func(p *cnsv1.GetPoolResponse) bool { return p.GetCounts().GetAvailable() >= 8 })
			nic := s.NICAddrs()
			if int(p.GetCounts().GetAvailable()+p.GetCounts().GetAssigned()) != len(nic) {
				t.Fatalf("pool %v disagrees with the NIC's %d addresses", p.GetCounts(), len(nic))
			}
		})
	}
}

func TestConcurrentWriterIsAdoptedAndVanishedAddressFlagged(t *testing.T) {
	s := stack.Start(t, stack.Options{Config: func(c *cns.Config) { c.Pool.ReconcileInterval = 100 * time.Millisecond }})
	s.WaitFor("warm pool", func(p *cnsv1.GetPoolResponse) bool { return p.GetCounts().GetAvailable() >= 8 })
	ctx := s.Ctx()
	held, err := s.Request(ctx, "victim")
	if err != nil {
		t.Fatal(err)
	}
	other, err := azure.New(s.Cfg.Azure) // an operator's tool writing the same NIC
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nic, err := other.GetNIC(cctx)
	if err != nil {
		t.Fatal(err)
	}
	before := len(nic.Secondaries)
	nic, err = other.UpdateIPConfigs(cctx, cloud.Change{ETag: nic.ETag, Add: 3, Remove: []netip.Addr{held}})
	if err != nil {
		t.Fatal(err)
	}
	p := s.WaitFor("adoption", func(p *cnsv1.GetPoolResponse) bool {
		c := p.GetCounts()
		return c.GetMissing() == 1 && int(c.GetAvailable()+c.GetAssigned()-c.GetMissing()+c.GetPendingRelease()) >= before+2
	})
	allocs, _ := s.Pool.ListAllocations(ctx, &cnsv1.ListAllocationsRequest{})
	if len(allocs.GetAllocations()) != 1 || !allocs.GetAllocations()[0].GetMissing() {
		t.Fatalf("vanished address not flagged: %v (pool %v)", allocs, p.GetCounts())
	}
	// The vanished address is never handed to anyone else.
	for i := range 30 {
		a, err := s.Request(ctx, fmt.Sprint("new-", i))
		if err != nil {
			t.Fatal(err)
		}
		if a == held || !slices.Contains(s.NICAddrs(), a) {
			t.Fatalf("handed out %s, which the NIC does not hold", a)
		}
	}
}

// TestOperatorIPConfigsAreLeftAlone: an operator's ip configurations on the node NIC (an
// IPv4 "web" behind a load balancer, an IPv6 one) are never handed to a pod, never removed
// on scale-down, and are carried through every write unchanged.
func TestOperatorIPConfigsAreLeftAlone(t *testing.T) {
	s := stack.Start(t, stack.Options{Config: func(c *cns.Config) {
		c.Pool.ReconcileInterval = 100 * time.Millisecond
		c.Pool.Limits.Cooldown, c.Pool.Limits.ReleaseDelay = 0, 100*time.Millisecond
	}})
	s.WaitFor("warm pool", func(p *cnsv1.GetPoolResponse) bool { return p.GetCounts().GetAvailable() >= 8 })
	web, err := s.Mock.AddIPConfig(s.Cfg.Azure.Subscription, s.Cfg.Azure.ResourceGroup, stack.NICName, "web", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Mock.AddIPConfig(s.Cfg.Azure.Subscription, s.Cfg.Azure.ResourceGroup, stack.NICName, "web6", netip.MustParseAddr("fd00::5")); err != nil {
		t.Fatal(err)
	}
	ctx := s.Ctx()
	for i := range 40 {
		a, err := s.Request(ctx, fmt.Sprint("pod-", i))
		if err != nil {
			t.Fatal(err)
		}
		if a == web {
			t.Fatalf("pod-%d was given the operator's address %s", i, a)
		}
	}
	for i := range 40 {
		if _, err := s.IPAM.ReleaseIPs(ctx, &cnsv1.ReleaseIPsRequest{ContainerId: fmt.Sprint("pod-", i), Ifname: "eth0"}); err != nil {
			t.Fatal(err)
		}
	}
	p := s.WaitFor("scale-down", func(p *cnsv1.GetPoolResponse) bool {
		return p.GetCounts().GetAvailable() <= p.GetLimits().GetMaxFree() && p.GetPendingOperation() == nil
	})
	nic := s.NICAddrs() // IPv4 configurations, whoever made them
	if !slices.Contains(nic, web) || int(p.GetCounts().GetAvailable())+1 != len(nic) {
		t.Fatalf("after scale-down the NIC holds %v (web %s kept: %v), pool %v", nic, web, slices.Contains(nic, web), p.GetCounts())
	}
}
