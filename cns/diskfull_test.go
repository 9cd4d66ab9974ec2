package cns_test

import (
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vnet-cni/vnet-cni/cns"
	"github.com/vnet-cni/vnet-cni/cns/store"
	"github.com/vnet-cni/vnet-cni/ipampool"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	"github.com/vnet-cni/vnet-cni/test/stack"
)

// fullDisk is the real store whose commits fail with ENOSPC while full is set.
type fullDisk struct {
	*store.Store
	full atomic.Bool
}

func (d *fullDisk) PutAllocation(a store.Allocation) error {
	if d.full.Load() {
		return syscall.ENOSPC
	}
	return d.Store.PutAllocation(a)
}

func (d *fullDisk) ReleaseAllocation(k ipampool.Key, addr netip.Addr, until time.Time) error {
	if d.full.Load() {
		return syscall.ENOSPC
	}
	return d.Store.ReleaseAllocation(k, addr, until)
}

func TestDiskFullFailsCleanly(t *testing.T) {
	disk := &fullDisk{}
	s := stack.Start(t, stack.Options{WrapStore: func(st *store.Store) cns.Store { disk.Store = st; return disk }})
	ctx := s.Ctx()
	held, err := s.Request(ctx, "held")
	if err != nil {
		t.Fatal(err)
	}
	before := s.WaitFor("settled", func(p *cnsv1.GetPoolResponse) bool { return p.GetPendingOperation() == nil }).GetCounts()

	disk.full.Store(true)
	if _, err := s.Request(ctx, "new"); status.Code(err) != codes.Internal {
		t.Fatalf("request with a full disk: %v, want Internal", err)
	}
	_, err = s.IPAM.ReleaseIPs(ctx, &cnsv1.ReleaseIPsRequest{ContainerId: "held", Ifname: "eth0"})
	if status.Code(err) != codes.Internal {
		t.Fatalf("release with a full disk: %v, want Internal", err)
	}
	after := s.WaitFor("counts", func(*cnsv1.GetPoolResponse) bool { return true }).GetCounts()
	if after.GetAssigned() != before.GetAssigned() || after.GetAvailable() != before.GetAvailable() {
		t.Fatalf("failed commits changed the pool: before %v, after %v", before, after)
	}
	disk.full.Store(false)
	if again, err := s.Request(ctx, "held"); err != nil || again != held {
		t.Fatalf("the held address after the failed release: %s %v, want %s", again, err, held)
	}
	if a, err := s.Request(ctx, "new"); err != nil || a == held {
		t.Fatalf("request once the disk has room: %s %v", a, err)
	}
	// Restart: the store holds exactly what was acknowledged.
	s.StopCNS()
	s.StartCNS()
	p := s.WaitFor("restored", func(p *cnsv1.GetPoolResponse) bool { return p.GetCounts().GetAssigned() == 2 })
	if p.GetCounts().GetAssigned() != 2 {
		t.Fatalf("after restart: %v", p.GetCounts())
	}
}
