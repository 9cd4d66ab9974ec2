package ipampool

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
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

// scanCandidates is ReleaseCandidates' rule written as a scan: Available addresses idle since
// at least now-delay, the longest idle first, ties to the highest address.
func scanCandidates(p *Pool, now time.Time, delay time.Duration, n int) []netip.Addr {
	var c []*slot
	for _, e := range p.entries {
		if e.State == Available && !e.Since.After(now.Add(-delay)) {
			c = append(c, e)
		}
	}
	slices.SortFunc(c, func(a, b *slot) int {
		if d := a.Since.Compare(b.Since); d != 0 {
			return d
		}
		return b.Addr.Compare(a.Addr)
	})
	out := []netip.Addr{}
	for _, e := range c[:min(n, len(c))] {
		out = append(out, e.Addr)
	}
	return out
}

// An Available entry whose Since changes stays in heap order (set's fix branch).
func TestHeapFollowsASinceChangeOfAnAvailableEntry(t *testing.T) {
	p := New()
	all := addrs(8)
	for i, a := range all {
		p.Adopt(a, t0.Add(time.Duration(i)*time.Second))
	}
	e := p.entries[all[0]]
	p.set(e, Entry{Addr: e.Addr, State: Available, Since: t0.Add(time.Hour)}) // idle the least now
	checkHeap(t, p)
	if got, _, _ := p.Assign(Owner{Key: Key{ContainerID: "c", IfName: "eth0"}}, t0.Add(2*time.Hour)); got.Addr != all[1] {
		t.Fatalf("Assign chose %s, want %s (the longest idle after the change)", got.Addr, all[1])
	}
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
		switch r.IntN(11) {
		case 0:
			p.Adopt(a, now)
		case 1, 2:
			want, ok := scanPick(p)
			_, held := p.Lookup(k)
			e, existed, err := p.Assign(Owner{Key: k}, now)
			if err == nil && !existed && (!ok || e.Addr != want) {
				t.Fatalf("step %d: Assign chose %s, scan %s", i, e.Addr, want)
			}
			if err != nil && ok && !held {
				t.Fatalf("step %d: Assign found nothing, scan %s", i, want)
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
			split := r.IntN(len(all))
			p.SyncNIC(all[:split], all[split:split+r.IntN(len(all)-split+1)], now)
		case 9:
			delay := time.Duration(r.IntN(4)) * time.Second
			if got, want := p.ReleaseCandidates(now, delay, 5), scanCandidates(p, now, delay, 5); !slices.Equal(got, want) {
				t.Fatalf("step %d: ReleaseCandidates %v, scan %v", i, got, want)
			}
		case 10: // loading durable state: a cooling-down address the pool does not hold yet
			if _, ok := p.Get(a); !ok {
				if err := p.Restore(Entry{Addr: a, State: Cooldown, Since: now.Add(-time.Duration(r.IntN(5)) * time.Second)}); err != nil {
					t.Fatalf("step %d: Restore of %s: %v", i, a, err)
				}
			}
		}
		checkHeap(t, p)
	}
}
