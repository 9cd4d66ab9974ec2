package gctune

// heapMinimum is the Go runtime's smallest heap goal at GOGC=100 (runtime/mgcpacer.go,
// defaultHeapMinimum); it scales with GOGC, so a high GOGC also raises the floor.
const heapMinimum = 4 << 20

// Policy decides the collector's target from how fast cns allocates.
type Policy struct {
	// IdlePercent is GOGC while cns is quiet.
	IdlePercent int
	// BusyHeap is the heap goal (bytes) while cns is busy, unless the live heap grows so
	// far that IdlePercent alone asks more.
	BusyHeap uint64
	// EnterRate (bytes per second) makes cns busy; below LeaveRate for QuietTicks ticks in a
	// row it is quiet again. The gap keeps a rate near one threshold from flapping.
	EnterRate, LeaveRate float64
	QuietTicks           int
}

// DefaultPolicy: 8 MiB/s is about a thousand requests a second; at GOGC=50 and a 2 MiB live
// heap it is eight collections a second. 16 MiB is one collection every ~14 MiB allocated.
func DefaultPolicy() Policy {
	return Policy{IdlePercent: 50, BusyHeap: 16 << 20, EnterRate: 8 << 20, LeaveRate: 2 << 20, QuietTicks: 4}
}

// State is what the policy remembers between ticks.
type State struct {
	Busy  bool
	quiet int // ticks in a row under LeaveRate while busy
}

// Decision is what to do after one tick.
type Decision struct {
	// Percent is the GOGC to apply.
	Percent int
	// Release returns the burst's freed memory to the kernel (cns just became quiet).
	Release bool
}

// Next takes the allocation rate of the last tick (bytes per second) and the live heap after
// the last collection, and returns the new state and what to apply.
func (p Policy) Next(s State, rate float64, live uint64) (State, Decision) {
	switch {
	case !s.Busy && rate >= p.EnterRate:
		s = State{Busy: true}
	case s.Busy && rate < p.LeaveRate:
		if s.quiet++; s.quiet >= p.QuietTicks {
			return State{}, Decision{Percent: p.IdlePercent, Release: true}
		}
	case s.Busy:
		s.quiet = 0
	}
	if !s.Busy {
		return s, Decision{Percent: p.IdlePercent}
	}
	return s, Decision{Percent: p.busyPercent(live)}
}

// busyPercent is the GOGC whose goal is BusyHeap for this live heap: the goal is
// live×(1+GOGC/100), and the runtime's own minimum (heapMinimum×GOGC/100) must not pass it.
// Never under IdlePercent: a live heap near BusyHeap keeps the idle proportion.
func (p Policy) busyPercent(live uint64) int {
	live = max(live, 1<<20) // before the first collection the runtime reports 0
	if live >= p.BusyHeap {
		return p.IdlePercent
	}
	byLive := (p.BusyHeap - live) * 100 / live
	byMinimum := p.BusyHeap * 100 / heapMinimum
	return max(p.IdlePercent, int(min(byLive, byMinimum)))
}
