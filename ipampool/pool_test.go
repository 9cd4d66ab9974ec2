package ipampool

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func addrs(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{10, 240, 0, byte(10 + i)})
	}
	return out
}

func owner(id string) Owner { return Owner{Key: Key{ContainerID: id, IfName: "eth0"}} }

func newPool(n int) *Pool {
	p := New()
	for _, a := range addrs(n) {
		p.Adopt(a, t0)
	}
	return p
}

func TestAssignIsIdempotentAndUnique(t *testing.T) {
	p := newPool(3)
	seen := map[netip.Addr]string{}
	for i := range 3 {
		id := fmt.Sprint("c", i)
		e, existed, err := p.Assign(owner(id), t0)
		if err != nil || existed {
			t.Fatalf("assign %s: existed=%v err=%v", id, existed, err)
		}
		if prev, dup := seen[e.Addr]; dup {
			t.Fatalf("%s handed to %s and %s", e.Addr, prev, id)
		}
		seen[e.Addr] = id
		again, existed, err := p.Assign(owner(id), t0.Add(time.Second))
		if err != nil || !existed || again.Addr != e.Addr {
			t.Fatalf("repeat assign %s: got %s existed=%v err=%v, want %s", id, again.Addr, existed, err, e.Addr)
		}
	}
	if _, _, err := p.Assign(owner("c3"), t0); !errors.Is(err, ErrNoAvailable) {
		t.Fatalf("assign on exhausted pool: err=%v, want ErrNoAvailable", err)
	}
	if got := p.Counts(); got != (Counts{Assigned: 3}) {
		t.Fatalf("counts %+v", got)
	}
}

func TestAssignPrefersLongestIdle(t *testing.T) {
	p := New()
	a := addrs(3)
	p.Adopt(a[0], t0.Add(2*time.Second))
	p.Adopt(a[1], t0)
	p.Adopt(a[2], t0)
	e, _, _ := p.Assign(owner("x"), t0.Add(3*time.Second))
	if e.Addr != a[1] {
		t.Fatalf("got %s, want %s (idle longest, lowest of ties)", e.Addr, a[1])
	}
}

func TestReleaseCooldownExpire(t *testing.T) {
	p := newPool(1)
	e, _, _ := p.Assign(owner("a"), t0)
	before, ok := p.Release(owner("a").Key, t0.Add(time.Second), 30*time.Second)
	if !ok || before.Owner.ContainerID != "a" {
		t.Fatalf("release: ok=%v before=%+v", ok, before)
	}
	if _, ok := p.Release(owner("a").Key, t0, time.Second); ok {
		t.Fatal("second release of the same key reported a release")
	}
	if _, _, err := p.Assign(owner("b"), t0.Add(2*time.Second)); !errors.Is(err, ErrNoAvailable) {
		t.Fatalf("cooling address was handed out: err=%v", err)
	}
	if got := p.Expire(t0.Add(30 * time.Second)); len(got) != 0 {
		t.Fatalf("expired early: %v", got)
	}
	if next, ok := p.NextExpiry(); !ok || !next.Equal(t0.Add(31*time.Second)) {
		t.Fatalf("next expiry %v %v", next, ok)
	}
	if got := p.Expire(t0.Add(31 * time.Second)); !slices.Equal(got, []netip.Addr{e.Addr}) {
		t.Fatalf("expire = %v", got)
	}
	if _, _, err := p.Assign(owner("b"), t0.Add(32*time.Second)); err != nil {
		t.Fatalf("assign after cooldown: %v", err)
	}
}

func TestReleaseWithoutCooldownIsAvailable(t *testing.T) {
	p := newPool(1)
	p.Assign(owner("a"), t0)
	p.Release(owner("a").Key, t0, 0)
	if c := p.Counts(); c.Available != 1 {
		t.Fatalf("counts %+v", c)
	}
}

func TestUnassignRollsBack(t *testing.T) {
	p := newPool(2)
	e, _, _ := p.Assign(owner("a"), t0.Add(time.Minute))
	p.Unassign(owner("a").Key, t0)
	if _, ok := p.Lookup(owner("a").Key); ok {
		t.Fatal("key still holds an address")
	}
	again, _, _ := p.Assign(owner("b"), t0.Add(2*time.Minute))
	if again.Addr != e.Addr {
		t.Fatalf("rolled-back address lost its place: got %s want %s", again.Addr, e.Addr)
	}
}

func TestReleaseCandidatesAndMark(t *testing.T) {
	p := New()
	a := addrs(4)
	p.Adopt(a[0], t0)
	p.Adopt(a[1], t0)
	p.Adopt(a[2], t0.Add(50*time.Second))
	p.Adopt(a[3], t0)
	p.Assign(owner("busy"), t0) // takes a[0]: idle longest, lowest
	got := p.ReleaseCandidates(t0.Add(60*time.Second), 60*time.Second, 5)
	if want := []netip.Addr{a[3], a[1]}; !slices.Equal(got, want) {
		t.Fatalf("candidates %v, want %v (never assigned, never too fresh, highest first)", got, want)
	}
	if err := p.MarkRelease([]netip.Addr{a[1], a[0]}, t0); !errors.Is(err, ErrWrongState) {
		t.Fatalf("marking an assigned address: err=%v", err)
	}
	if c := p.Counts(); c.PendingRelease != 0 {
		t.Fatalf("failed mark changed state: %+v", c)
	}
	if err := p.MarkRelease(got, t0); err != nil {
		t.Fatal(err)
	}
	if pr := p.PendingReleases(); !slices.Equal(pr, []netip.Addr{a[1], a[3]}) {
		t.Fatalf("pending releases %v", pr)
	}
	p.CancelRelease([]netip.Addr{a[3]}, t0)
	if c := p.Counts(); c.PendingRelease != 1 || c.Available != 2 {
		t.Fatalf("after cancel %+v", c)
	}
}

func TestSyncNIC(t *testing.T) {
	p := New()
	a := addrs(5)
	p.Adopt(a[0], t0)
	p.Adopt(a[1], t0)
	p.Adopt(a[2], t0)
	p.Assign(owner("pod"), t0) // a[0]
	r := p.SyncNIC([]netip.Addr{a[1], a[3], a[4]}, nil, t0)
	want := SyncReport{Adopted: []netip.Addr{a[3], a[4]}, Dropped: []netip.Addr{a[2]}, Missing: []netip.Addr{a[0]}}
	if fmt.Sprint(r) != fmt.Sprint(want) {
		t.Fatalf("report %+v, want %+v", r, want)
	}
	if c := p.Counts(); c != (Counts{Available: 3, Assigned: 1, Missing: 1}) || c != recount(p) {
		t.Fatalf("counts %+v, recounted %+v", c, recount(p))
	}
	if r := p.SyncNIC([]netip.Addr{a[0], a[1], a[3], a[4]}, nil, t0); !slices.Equal(r.Found, []netip.Addr{a[0]}) || r.Changed() && len(r.Found) != 1 {
		t.Fatalf("address back on NIC: %+v", r)
	}
	if r := p.SyncNIC([]netip.Addr{a[0], a[1], a[3], a[4]}, nil, t0); r.Changed() {
		t.Fatalf("second identical sync changed %+v", r)
	}
	// Releasing a missing address forgets it rather than cooling it down.
	p.SyncNIC([]netip.Addr{a[1]}, nil, t0)
	p.Release(owner("pod").Key, t0, time.Minute)
	if _, ok := p.Get(a[0]); ok {
		t.Fatal("missing address kept after release")
	}
}

// TestSyncNICNeverAdoptsForeignConfigs: an operator's ip configuration is never taken into
// the pool; one an older cns adopted leaves it (or, if a pod holds it, stays with that pod
// and leaves on release, never cooled down for reuse).
func TestSyncNICNeverAdoptsForeignConfigs(t *testing.T) {
	p := New()
	a := addrs(5)
	p.Adopt(a[0], t0) // adopted by an older cns from a foreign configuration, assigned since
	p.Adopt(a[1], t0) // adopted by an older cns, idle
	p.Assign(owner("pod"), t0)
	r := p.SyncNIC([]netip.Addr{a[2]}, []netip.Addr{a[0], a[1], a[3]}, t0)
	want := SyncReport{Adopted: []netip.Addr{a[2]}, Dropped: []netip.Addr{a[1]}, Foreign: []netip.Addr{a[0]}}
	if fmt.Sprint(r) != fmt.Sprint(want) {
		t.Fatalf("report %+v, want %+v", r, want)
	}
	if c := p.Counts(); c != (Counts{Available: 1, Assigned: 1, Foreign: 1}) || c != recount(p) {
		t.Fatalf("counts %+v, recounted %+v", c, recount(p))
	}
	if e, _, err := p.Assign(owner("next"), t0); err != nil || e.Addr != a[2] {
		t.Fatalf("next assignment %v %v, want the own address %s", e.Addr, err, a[2])
	}
	if r := p.SyncNIC([]netip.Addr{a[2]}, []netip.Addr{a[0], a[1], a[3]}, t0); r.Changed() {
		t.Fatalf("second identical sync changed %+v", r)
	}
	p.Release(owner("pod").Key, t0, time.Minute)
	if _, ok := p.Get(a[0]); ok {
		t.Fatal("foreign address kept (for reuse or removal) after its pod released it")
	}
}

func TestRestoreRefusesDoubleOwnership(t *testing.T) {
	p := New()
	a := addrs(2)
	e := Entry{Addr: a[0], State: Assigned, Owner: owner("a"), AssignedAt: t0}
	if err := p.Restore(e); err != nil {
		t.Fatal(err)
	}
	if err := p.Restore(Entry{Addr: a[0], State: Assigned, Owner: owner("b")}); !errors.Is(err, ErrWrongState) {
		t.Fatalf("second owner of %s: err=%v", a[0], err)
	}
	if err := p.Restore(Entry{Addr: a[1], State: Assigned, Owner: owner("a")}); !errors.Is(err, ErrWrongState) {
		t.Fatalf("key with two addresses: err=%v", err)
	}
	if got := p.Owners(); len(got) != 1 || got[0].ContainerID != "a" {
		t.Fatalf("owners %v", got)
	}
}

func FuzzPoolInvariants(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 1, 1, 2})
	f.Fuzz(func(t *testing.T, ops []byte) {
		p := newPool(4)
		now := t0
		for _, op := range ops {
			now = now.Add(time.Second)
			id := fmt.Sprint("c", op>>4)
			switch op % 5 {
			case 0, 1:
				p.Assign(owner(id), now)
			case 2:
				p.Release(owner(id).Key, now, 3*time.Second)
			case 3:
				p.Expire(now)
			case 4:
				p.MarkRelease(p.ReleaseCandidates(now, 2*time.Second, 1), now)
			}
			held := map[netip.Addr]bool{}
			for _, k := range p.Owners() {
				e, _ := p.Lookup(k)
				if e.State != Assigned || e.Owner.Key != k || held[e.Addr] {
					t.Fatalf("invariant broken for %v: %+v", k, e)
				}
				held[e.Addr] = true
			}
			if c := p.Counts(); c.Assigned != len(held) || c.Total() != 4 || c != recount(p) {
				t.Fatalf("counts %+v, recounted %+v, held %d", c, recount(p), len(held))
			}
		}
	})
}

// recount counts the entries from scratch, to check the incremental counts.
func recount(p *Pool) Counts {
	c := Counts{Pending: p.pending}
	for _, e := range p.Entries() {
		switch e.State {
		case Available:
			c.Available++
		case Assigned:
			c.Assigned++
			if e.Missing {
				c.Missing++
			}
			if e.Foreign {
				c.Foreign++
			}
		case Cooldown:
			c.Cooldown++
		case PendingRelease:
			c.PendingRelease++
		}
	}
	return c
}
