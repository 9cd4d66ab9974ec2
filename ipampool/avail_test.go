package ipampool

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// scanPick is Assign's rule written as a scan of every entry: the Available address idle
// the longest, ties to the lowest.
func scanPick(p *Pool) (netip.Addr, bool) {
	var best *slot
	for _, c := range p.entries {
		if c.State == Available && (best == nil || c.Since.Before(best.Since) || c.Since.Equal(best.Since) && c.Addr.Less(best.Addr)) {
			best = c
		}
	}
	if best == nil {
		return netip.Addr{}, false
	}
	return best.Addr, true
}

// checkHeap verifies the heap holds exactly the Available entries, each at its index, in order.
func checkHeap(t *testing.T, p *Pool) {
	t.Helper()
	n := 0
	for _, e := range p.entries {
		if e.State == Available {
			n++
			if e.at < 0 || e.at >= len(p.avail) || p.avail[e.at] != e {
				t.Fatalf("%s: Available but heap index %d is wrong", e.Addr, e.at)
			}
		} else if e.at != -1 {
			t.Fatalf("%s: %s but heap index %d", e.Addr, e.State, e.at)
		}
	}
	if n != len(p.avail) {
		t.Fatalf("heap holds %d entries, pool %d Available", len(p.avail), n)
	}
	for i := 1; i < len(p.avail); i++ {
		if before(p.avail[i], p.avail[(i-1)/2]) {
			t.Fatalf("heap order broken at %d", i)
		}
	}
}

// TestAssignHeapMatchesScan drives a pool through random operations (coarse times, so ties
// on Since are common) and checks after each that Assign picks what a full scan would.
func TestAssignHeapMatchesScan(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	p := New()
	all := addrs(40)
	now := t0
	for i := range 5000 {
		now = now.Add(time.Duration(r.IntN(3)) * time.Second)
		a := all[r.IntN(len(all))]
		k := Key{ContainerID: fmt.Sprint("c", r.IntN(30)), IfName: "eth0"}
		switch r.IntN(9) {
		case 0:
			p.Adopt(a, now)
		case 1, 2:
			want, ok := scanPick(p)
			e, existed, err := p.Assign(Owner{Key: k}, now)
			if err == nil && !existed && (!ok || e.Addr != want) {
				t.Fatalf("step %d: Assign chose %s, scan %s", i, e.Addr, want)
			}
		case 3:
			p.Release(k, now, time.Duration(r.IntN(2))*time.Second)
		case 4:
			p.Unassign(k, now.Add(-time.Duration(r.IntN(5))*time.Second))
		case 5:
			p.Expire(now)
		case 6:
			_ = p.MarkRelease([]netip.Addr{a}, now)
		case 7:
			p.CancelRelease([]netip.Addr{a}, now)
		case 8:
			own := all[:r.IntN(len(all))]
			p.SyncNIC(own, nil, now)
		}
		checkHeap(t, p)
	}
}
