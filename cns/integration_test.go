package cns_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/vnet-cni/vnet-cni/cns"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
	"github.com/vnet-cni/vnet-cni/test/stack"
)

func TestWarmPoolRequestReleaseAndTCPIsReadOnly(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	ctx := s.Ctx()
	p := s.WaitFor("min free available", func(p *cnsv1.GetPoolResponse) bool { return p.GetCounts().GetAvailable() >= 8 })
	subnet := netip.MustParsePrefix(p.GetSubnetPrefix())

	a, err := s.Request(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if !subnet.Contains(a) {
		t.Fatalf("address %s outside subnet %s", a, subnet)
	}
	again, err := s.Request(ctx, "c1")
	if err != nil || again != a {
		t.Fatalf("repeat request: %s, %v; want %s", again, err, a)
	}
	if !slices.Contains(s.NICAddrs(), a) {
		t.Fatalf("NIC in mockarm does not hold %s: %v", a, s.NICAddrs())
	}
	allocs, _ := s.Pool.ListAllocations(ctx, &cnsv1.ListAllocationsRequest{})
	if len(allocs.GetAllocations()) != 1 || allocs.GetAllocations()[0].GetAddress() != a.String() {
		t.Fatalf("allocations: %v", allocs)
	}
	rel, err := s.IPAM.ReleaseIPs(ctx, &cnsv1.ReleaseIPsRequest{ContainerId: "c1", Ifname: "eth0"})
	if err != nil || !rel.GetReleased() {
		t.Fatalf("release: %v %v", rel, err)
	}
	if rel, err := s.IPAM.ReleaseIPs(ctx, &cnsv1.ReleaseIPsRequest{ContainerId: "c1", Ifname: "eth0"}); err != nil || rel.GetReleased() {
		t.Fatalf("second release: %v %v; want success, released=false", rel, err)
	}
	if c := s.WaitFor("cooldown", func(p *cnsv1.GetPoolResponse) bool { return p.GetCounts().GetCooldown() == 1 }).GetCounts(); c.GetAssigned() != 0 {
		t.Fatalf("counts after release: %v", c)
	}
	next, _ := s.Request(ctx, "c2")
	if next == a {
		t.Fatalf("cooling address %s handed out again", a)
	}

	// The TCP listener serves PoolService and health, never IPAMService.
	conn, err := grpc.NewClient(s.TCPAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = cnsv1grpc.NewIPAMServiceClient(conn).RequestIPs(ctx, &cnsv1.RequestIPsRequest{ContainerId: "x", Ifname: "eth0"})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("IPAMService over TCP: %v, want Unimplemented", err)
	}
	if _, err := cnsv1grpc.NewPoolServiceClient(conn).GetPool(ctx, &cnsv1.GetPoolRequest{}); err != nil {
		t.Fatalf("PoolService over TCP: %v", err)
	}
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "cns.v1.IPAMService"})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}
	fi, err := os.Stat(s.Socket)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v, want 0600", fi.Mode(), err)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != uint32(os.Geteuid()) {
		t.Fatalf("socket owned by uid %d, want cns's own uid %d (root in production)", uid, os.Geteuid())
	}
}

func TestInvalidRequestsChangeNothing(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	ctx := s.Ctx()
	tests := []struct {
		name string
		req  *cnsv1.RequestIPsRequest
	}{
		{"empty container id", &cnsv1.RequestIPsRequest{Ifname: "eth0"}},
		{"empty ifname", &cnsv1.RequestIPsRequest{ContainerId: "c"}},
		{"ifname too long", &cnsv1.RequestIPsRequest{ContainerId: "c", Ifname: strings.Repeat("e", 16)}},
		{"ifname with slash", &cnsv1.RequestIPsRequest{ContainerId: "c", Ifname: "a/b"}},
		{"huge container id", &cnsv1.RequestIPsRequest{ContainerId: strings.Repeat("c", 100000), Ifname: "eth0"}},
		{"control character", &cnsv1.RequestIPsRequest{ContainerId: "c\x00d", Ifname: "eth0"}},
		{"netns path too long", &cnsv1.RequestIPsRequest{ContainerId: "c", Ifname: "eth0", Netns: "/" + strings.Repeat("n", 5000)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.IPAM.RequestIPs(ctx, tc.req)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("got %v, want InvalidArgument", err)
			}
		})
	}
	_, err := s.IPAM.GarbageCollect(ctx, &cnsv1.GarbageCollectRequest{ValidAttachments: []*cnsv1.Attachment{{ContainerId: "x"}}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("GC with an invalid attachment: %v, want InvalidArgument", err)
	}
	if c := s.WaitFor("counts", func(*cnsv1.GetPoolResponse) bool { return true }).GetCounts(); c.GetAssigned() != 0 {
		t.Fatalf("invalid requests assigned addresses: %v", c)
	}
}

func TestNICLimitExhaustsCleanly(t *testing.T) {
	s := stack.Start(t, stack.Options{Config: func(c *cns.Config) { c.Pool.Limits.Cooldown = 0 }})
	ctx := s.Ctx()
	var (
		mu        sync.Mutex
		got       = map[netip.Addr]string{}
		exhausted int
		wg        sync.WaitGroup
		errs      []error
	)
	sem := make(chan struct{}, 64)
	for i := range 300 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			id := fmt.Sprintf("pod-%03d", i)
			a, err := s.Request(ctx, id)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				if prev, dup := got[a]; dup {
					errs = append(errs, fmt.Errorf("%s handed to %s and %s", a, prev, id))
				}
				got[a] = id
			case status.Code(err) == codes.ResourceExhausted && strings.Contains(err.Error(), "--max-ips=250"):
				exhausted++
			default:
				errs = append(errs, fmt.Errorf("%s: %v", id, err))
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if len(got) != 250 || exhausted != 50 {
		t.Fatalf("%d succeeded, %d exhausted; want 250 and 50", len(got), exhausted)
	}
	if n := len(s.NICAddrs()); n != 250 {
		t.Fatalf("NIC holds %d secondary addresses, want 250 (256 ip configurations at most)", n)
	}
	st, _ := s.IPAM.Status(ctx, &cnsv1.StatusRequest{})
	if st.GetReady() || st.GetReason() != cnsv1.NotReadyReason_NOT_READY_REASON_EXHAUSTED {
		t.Fatalf("status on a full NIC: %v", st)
	}
	// Releasing one makes room again.
	if _, err := s.IPAM.ReleaseIPs(ctx, &cnsv1.ReleaseIPsRequest{ContainerId: "pod-000", Ifname: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Request(ctx, "late"); err != nil {
		t.Fatalf("request after a release: %v", err)
	}
}

func TestBurstIsServedByFewNICWrites(t *testing.T) {
	s := stack.Start(t, stack.Options{Mock: func(c *mockarm.Config) { c.Latency = 300 * time.Millisecond }})
	ctx := s.Ctx()
	s.WaitFor("warm pool", func(p *cnsv1.GetPoolResponse) bool { return p.GetCounts().GetAvailable() >= 8 })
	before := s.Mock.Stats().Writes
	var wg sync.WaitGroup
	errc := make(chan error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Request(ctx, fmt.Sprint("burst-", i)); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if w := s.Mock.Stats().Writes - before; w > 3 {
		t.Fatalf("100 concurrent requests took %d NIC writes, want at most 3 (demand-aware growth)", w)
	}
}

func TestRestartKeepsAllocationsAndCooldowns(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	ctx := s.Ctx()
	held := map[string]netip.Addr{}
	for i := range 5 {
		id := fmt.Sprint("c", i)
		a, err := s.Request(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		held[id] = a
	}
	s.IPAM.ReleaseIPs(ctx, &cnsv1.ReleaseIPsRequest{ContainerId: "c0", Ifname: "eth0"})
	delete(held, "c0")

	s.StopCNS()
	s.RestartMock()
	s.StartCNS()
	ctx = s.Ctx()

	p := s.WaitFor("restored", func(p *cnsv1.GetPoolResponse) bool { return p.GetCounts().GetAssigned() == 4 })
	if p.GetCounts().GetCooldown() != 1 {
		t.Fatalf("cooldown lost across restart: %v", p.GetCounts())
	}
	for id, a := range held {
		if got, err := s.Request(ctx, id); err != nil || got != a {
			t.Fatalf("%s after restart: %s %v, want %s", id, got, err, a)
		}
	}
}

func TestSubnetFullIsResourceExhausted(t *testing.T) {
	// A /28 has 16 addresses; Azure keeps 5, the node takes 1: ten for pods.
	s := stack.Start(t, stack.Options{
		Mock:   func(c *mockarm.Config) { c.Subnet = netip.MustParsePrefix("10.9.0.0/28") },
		Config: func(c *cns.Config) { c.Pool.Limits.BatchSize = 4; c.Pool.Limits.MinFree = 2; c.Pool.Limits.MaxFree = 6 },
	})
	ctx := s.Ctx()
	var lastErr error
	n := 0
	for i := range 12 {
		if _, err := s.Request(ctx, fmt.Sprint("c", i)); err != nil {
			lastErr = err
			break
		}
		n++
	}
	if n != 10 {
		t.Fatalf("%d addresses handed out, want 10", n)
	}
	if status.Code(lastErr) != codes.ResourceExhausted || !strings.Contains(lastErr.Error(), "subnet 10.9.0.0/28 is full") {
		t.Fatalf("11th request: %v, want ResourceExhausted naming the full subnet", lastErr)
	}
}

func TestWatchPoolStreamsEvents(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := s.Pool.WatchPool(ctx, &cnsv1.WatchPoolRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The stream is registered once the server has the call; a request made before could be
	// missed, so keep requesting until an assignment arrives.
	go func() {
		for i := 0; ctx.Err() == nil && i < 50; i++ {
			s.Request(ctx, fmt.Sprint("w", i))
			time.Sleep(20 * time.Millisecond)
		}
	}()
	for {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("no assignment event: %v", err)
		}
		if ev.GetType() == cnsv1.EventType_EVENT_TYPE_ASSIGNED && ev.GetAddress() != "" && ev.GetCounts().GetAssigned() > 0 {
			return
		}
	}
}
