package ipampool

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// State is the life-cycle state of one address known to be on the NIC.
type State uint8

// The states of an address. Pending additions have no address yet and are only counted.
const (
	Available      State = iota + 1 // on the NIC, free to assign
	Assigned                        // held by a pod
	Cooldown                        // released by a pod, not reusable until its deadline
	PendingRelease                  // chosen to leave the NIC; a cloud write removes it
)

func (s State) String() string {
	switch s {
	case Available:
		return "Available"
	case Assigned:
		return "Assigned"
	case Cooldown:
		return "Cooldown"
	case PendingRelease:
		return "PendingRelease"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Key identifies one pod interface, the unit of idempotency. CNI names an attachment by
// (network, container ID, ifname), but (container ID, ifname) already names one interface
// in one sandbox, and the datapath (the host veth is named from it) can hold it only once:
// the network is therefore a property of the Owner, checked on every call, not a key part.
type Key struct {
	ContainerID string
	IfName      string
}

// Owner is the pod interface holding an address: the CNI network that attached it (which
// scopes garbage collection) and informational pod metadata.
type Owner struct {
	Key
	Network      string
	PodNamespace string
	PodName      string
	PodUID       string // empty when the runtime did not pass K8S_POD_UID
	Netns        string
}

// Entry is one address and its state. Entries returned by Pool are copies.
type Entry struct {
	Addr  netip.Addr
	State State
	// Since is when the address entered its state; for Available it is the start of idleness.
	Since time.Time
	// Until is the end of Cooldown.
	Until time.Time
	// Owner and AssignedAt are set while Assigned.
	Owner      Owner
	AssignedAt time.Time
	// Missing marks an Assigned address that the NIC no longer holds.
	Missing bool
	// Foreign marks an Assigned address whose ip configuration cns did not create (an older
	// cns adopted it): the pod keeps it, but once released it leaves the pool, untouched.
	Foreign bool
}

// Counts is the number of addresses per state.
type Counts struct {
	Pending, Available, Assigned, Cooldown, PendingRelease, Missing int
	Foreign                                                         int // Assigned on a foreign ip configuration
}

// Total is every address the pool holds or is adding, i.e. the NIC's secondary ip
// configurations once the in-flight write lands.
func (c Counts) Total() int {
	return c.Pending + c.Available + c.Assigned + c.Cooldown + c.PendingRelease
}

// Errors returned by Pool.
var (
	ErrNoAvailable = errors.New("no available address")
	ErrUnknownAddr = errors.New("address not in pool")
	ErrWrongState  = errors.New("address in wrong state")
)

// Pool is the set of addresses on the node NIC. The zero value is not usable; call New.
type Pool struct {
	entries map[netip.Addr]*slot
	byKey   map[Key]netip.Addr
	pending int
	counts  Counts    // kept in step with entries by set, put and drop
	avail   availHeap // the Available entries, kept in step by set, put and drop
}

// New returns an empty pool.
func New() *Pool {
	return &Pool{entries: map[netip.Addr]*slot{}, byKey: map[Key]netip.Addr{}}
}

// Counts returns the number of addresses per state.
func (p *Pool) Counts() Counts {
	c := p.counts
	c.Pending = p.pending
	return c
}

// tally adds d times e to the counts.
func (p *Pool) tally(e *Entry, d int) {
	switch e.State {
	case Available:
		p.counts.Available += d
	case Assigned:
		p.counts.Assigned += d
		if e.Missing {
			p.counts.Missing += d
		}
		if e.Foreign {
			p.counts.Foreign += d
		}
	case Cooldown:
		p.counts.Cooldown += d
	case PendingRelease:
		p.counts.PendingRelease += d
	}
}

// set replaces the entry at e's address with v, keeping the counts and the Available heap.
func (p *Pool) set(e *slot, v Entry) {
	p.tally(&e.Entry, -1)
	was := e.State == Available
	e.Entry = v
	p.tally(&e.Entry, 1)
	switch now := e.State == Available; {
	case was && now:
		p.avail.fix(e)
	case was:
		p.avail.remove(e)
	case now:
		p.avail.push(e)
	}
}

// put adds a new entry.
func (p *Pool) put(v Entry) {
	e := &slot{Entry: v, at: -1}
	p.entries[v.Addr] = e
	p.tally(&e.Entry, 1)
	if e.State == Available {
		p.avail.push(e)
	}
}

// drop forgets an entry.
func (p *Pool) drop(e *slot) {
	p.tally(&e.Entry, -1)
	if e.State == Available {
		p.avail.remove(e)
	}
	delete(p.entries, e.Addr)
}

// SetPending records how many ip configurations an in-flight cloud write is adding.
func (p *Pool) SetPending(n int) { p.pending = max(n, 0) }

// Lookup returns the entry held by key.
func (p *Pool) Lookup(k Key) (Entry, bool) {
	a, ok := p.byKey[k]
	if !ok {
		return Entry{}, false
	}
	return p.entries[a].Entry, true
}

// Get returns the entry of addr.
func (p *Pool) Get(addr netip.Addr) (Entry, bool) {
	e, ok := p.entries[addr]
	if !ok {
		return Entry{}, false
	}
	return e.Entry, true
}

// Entries returns a copy of every entry, ordered by address.
func (p *Pool) Entries() []Entry {
	out := make([]Entry, 0, len(p.entries))
	for _, e := range p.entries {
		out = append(out, e.Entry)
	}
	slices.SortFunc(out, func(a, b Entry) int { return a.Addr.Compare(b.Addr) })
	return out
}

// Adopt adds addr as Available, idle since now. Known addresses are left alone; it reports
// whether addr was new.
func (p *Pool) Adopt(addr netip.Addr, now time.Time) bool {
	if _, ok := p.entries[addr]; ok {
		return false
	}
	p.put(Entry{Addr: addr, State: Available, Since: now})
	return true
}

// Restore puts back an entry loaded from durable state (Assigned, Cooldown or PendingRelease).
// It refuses an entry that would break the one-key-one-address invariant.
func (p *Pool) Restore(e Entry) error {
	if old, ok := p.entries[e.Addr]; ok && old.State == Assigned && old.Owner.Key != e.Owner.Key {
		return fmt.Errorf("restore %s for %v: already held by %v: %w", e.Addr, e.Owner.Key, old.Owner.Key, ErrWrongState)
	}
	if e.State == Assigned {
		if a, ok := p.byKey[e.Owner.Key]; ok && a != e.Addr {
			return fmt.Errorf("restore %s for %v: key already holds %s: %w", e.Addr, e.Owner.Key, a, ErrWrongState)
		}
		p.byKey[e.Owner.Key] = e.Addr
	}
	if old, ok := p.entries[e.Addr]; ok {
		p.drop(old)
	}
	p.put(e)
	return nil
}

// Assign gives owner an address. It is idempotent: a key that holds an address gets the same
// one back with existed=true. A new address is the Available one idle the longest (ties: the
// lowest), so reuse of a just-freed address is as late as possible.
func (p *Pool) Assign(o Owner, now time.Time) (e Entry, existed bool, err error) {
	if a, ok := p.byKey[o.Key]; ok {
		return p.entries[a].Entry, true, nil
	}
	if len(p.avail) == 0 {
		return Entry{}, false, ErrNoAvailable
	}
	best := p.avail[0]
	p.set(best, Entry{Addr: best.Addr, State: Assigned, Since: now, Owner: o, AssignedAt: now})
	p.byKey[o.Key] = best.Addr
	return best.Entry, false, nil
}

// Unassign undoes an Assign whose commit failed: the address is Available again and keeps
// its place at the front of the queue.
func (p *Pool) Unassign(k Key, idleSince time.Time) {
	a, ok := p.byKey[k]
	if !ok {
		return
	}
	delete(p.byKey, k)
	p.set(p.entries[a], Entry{Addr: a, State: Available, Since: idleSince})
}

// Release returns the key's address: into Cooldown until now+cooldown, or straight to
// Available when cooldown is zero. An address the NIC lost, or one on a foreign ip
// configuration, is dropped. It reports the entry as
// it was before release, and false for an unknown key.
func (p *Pool) Release(k Key, now time.Time, cooldown time.Duration) (Entry, bool) {
	a, ok := p.byKey[k]
	if !ok {
		return Entry{}, false
	}
	delete(p.byKey, k)
	e := p.entries[a]
	before := e.Entry
	switch {
	case e.Missing || e.Foreign:
		p.drop(e)
	case cooldown > 0:
		p.set(e, Entry{Addr: a, State: Cooldown, Since: now, Until: now.Add(cooldown)})
	default:
		p.set(e, Entry{Addr: a, State: Available, Since: now})
	}
	return before, true
}

// Expire moves every Cooldown address whose deadline has passed to Available and returns them.
func (p *Pool) Expire(now time.Time) []netip.Addr {
	var out []netip.Addr
	if p.counts.Cooldown == 0 {
		return nil
	}
	for _, e := range p.entries {
		if e.State == Cooldown && !now.Before(e.Until) {
			p.set(e, Entry{Addr: e.Addr, State: Available, Since: e.Until})
			out = append(out, e.Addr)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// NextExpiry returns the earliest Cooldown deadline, if any.
func (p *Pool) NextExpiry() (time.Time, bool) {
	var t time.Time
	for _, e := range p.entries {
		if e.State == Cooldown && (t.IsZero() || e.Until.Before(t)) {
			t = e.Until
		}
	}
	return t, !t.IsZero()
}

// ReleaseCandidates returns up to n Available addresses idle since at least now-delay, the
// longest idle first (ties: highest address first, so the pool keeps its low addresses).
func (p *Pool) ReleaseCandidates(now time.Time, delay time.Duration, n int) []netip.Addr {
	var c []*slot
	for _, e := range p.avail {
		if !e.Since.After(now.Add(-delay)) {
			c = append(c, e)
		}
	}
	slices.SortFunc(c, func(a, b *slot) int {
		if r := a.Since.Compare(b.Since); r != 0 {
			return r
		}
		return b.Addr.Compare(a.Addr)
	})
	out := make([]netip.Addr, 0, min(n, len(c)))
	for _, e := range c[:min(n, len(c))] {
		out = append(out, e.Addr)
	}
	return out
}

// MarkRelease moves Available addresses to PendingRelease. It fails, changing nothing, if
// any is not Available.
func (p *Pool) MarkRelease(addrs []netip.Addr, now time.Time) error {
	for _, a := range addrs {
		e, ok := p.entries[a]
		if !ok {
			return fmt.Errorf("mark %s for release: %w", a, ErrUnknownAddr)
		}
		if e.State != Available {
			return fmt.Errorf("mark %s for release: is %s: %w", a, e.State, ErrWrongState)
		}
	}
	for _, a := range addrs {
		e := p.entries[a]
		p.set(e, Entry{Addr: a, State: PendingRelease, Since: now})
	}
	return nil
}

// CancelRelease returns PendingRelease addresses to Available (the removal did not happen).
func (p *Pool) CancelRelease(addrs []netip.Addr, now time.Time) {
	for _, a := range addrs {
		if e, ok := p.entries[a]; ok && e.State == PendingRelease {
			p.set(e, Entry{Addr: a, State: Available, Since: now})
		}
	}
}

// PendingReleases returns the PendingRelease addresses in order.
func (p *Pool) PendingReleases() []netip.Addr {
	var out []netip.Addr
	for _, e := range p.entries {
		if e.State == PendingRelease {
			out = append(out, e.Addr)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// SyncReport says what SyncNIC changed.
type SyncReport struct {
	Adopted []netip.Addr // on cns's own configurations, unknown to the pool: now Available
	Dropped []netip.Addr // known, not Assigned, gone from cns's configurations: forgotten
	Missing []netip.Addr // Assigned, gone from the NIC: flagged, still held
	Found   []netip.Addr // Assigned and flagged missing, back on the NIC: unflagged
	Foreign []netip.Addr // Assigned, on a configuration cns did not create: newly flagged
}

// Changed reports whether the sync changed anything.
func (r SyncReport) Changed() bool {
	return len(r.Adopted)+len(r.Dropped)+len(r.Missing)+len(r.Found)+len(r.Foreign) > 0
}

// SyncNIC makes the pool agree with the NIC: own are the addresses of cns's own ip
// configurations, foreign those of everyone else's. Only own addresses are adopted; an
// unassigned address on a foreign configuration leaves the pool. Assigned addresses are
// never dropped: a pod still uses them, so they are flagged Missing (on no configuration)
// or Foreign (on someone else's) for an operator to see.
func (p *Pool) SyncNIC(own, foreign []netip.Addr, now time.Time) SyncReport {
	var r SyncReport
	set := make(map[netip.Addr]bool, len(own)+len(foreign)) // address → is own
	for _, a := range foreign {
		set[a] = false
	}
	for _, a := range own {
		set[a] = true
		if p.Adopt(a, now) {
			r.Adopted = append(r.Adopted, a)
		}
	}
	for a, e := range p.entries {
		mine, present := set[a]
		switch {
		case e.State == Assigned:
			v := e.Entry
			v.Missing, v.Foreign = !present, present && !mine
			if v.Missing == e.Missing && v.Foreign == e.Foreign {
				continue
			}
			switch {
			case v.Missing:
				r.Missing = append(r.Missing, a)
			case e.Missing:
				r.Found = append(r.Found, a)
			}
			if v.Foreign && !e.Foreign {
				r.Foreign = append(r.Foreign, a)
			}
			p.set(e, v)
		case !mine:
			p.drop(e)
			r.Dropped = append(r.Dropped, a)
		}
	}
	for _, s := range [][]netip.Addr{r.Adopted, r.Dropped, r.Missing, r.Found, r.Foreign} {
		slices.SortFunc(s, netip.Addr.Compare)
	}
	return r
}

// Owners returns every assigned key, ordered.
func (p *Pool) Owners() []Key {
	out := make([]Key, 0, len(p.byKey))
	for k := range p.byKey {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b Key) int {
		return cmp.Or(cmp.Compare(a.ContainerID, b.ContainerID), cmp.Compare(a.IfName, b.IfName))
	})
	return out
}
