package gctune

// heapMinimum is the Go runtime's smallest heap goal at GOGC=100 (runtime/mgcpacer.go,
// defaultHeapMinimum); it scales with GOGC, so a high GOGC also raises the floor.
const heapMinimum = 4 << 20

// Policy decides the collector's target from how often it runs.
type Policy struct {
	// IdlePercent is GOGC while the collector is cheap.
	IdlePercent int
	// BusyHeap is the heap goal (bytes) while cns allocates fast, unless its live heap has
	// grown so far that IdlePercent alone asks more.
	BusyHeap uint64
	// EnterCycles: collections a second at IdlePercent that make cns busy. LeaveCycles: once
	// the allocation rate would make fewer than this at IdlePercent for QuietTicks ticks in a
	// row, cns is quiet again. The gap keeps a rate near one threshold from flapping.
	EnterCycles, LeaveCycles float64
	QuietTicks               int
}

// DefaultPolicy: at cns's 2 MiB live heap and GOGC=50 a collection comes every ~1.5 MiB
// allocated, so 8 a second is about 1,500 requests a second; each costs 1–5 ms of CPU on a
// small VM, mostly waking both cores and scanning every goroutine's stack. 16 MiB makes it
// one collection every ~14 MiB.
func DefaultPolicy() Policy {
	return Policy{IdlePercent: 50, BusyHeap: 16 << 20, EnterCycles: 8, LeaveCycles: 2, QuietTicks: 2}
}

// Window is what the runtime did during one tick, and its heap as of the last collection.
type Window struct {
	Seconds   float64
	Cycles    uint64 // collections completed
	Allocated uint64 // bytes allocated
	// Live (marked) heap, and the goroutine stacks and globals the collector scans: the
	// runtime's goal is Live + (Live+Stacks+Globals)×GOGC/100.
	Live, Stacks, Globals uint64
}

// State is what the policy remembers between ticks.
type State struct {
	Busy bool
	// perIdleCycle is how many bytes cns allocated per collection while still at IdlePercent,
	// measured when it became busy: the rate it would collect at if the goal dropped back.
	perIdleCycle float64
	quiet        int // ticks in a row under LeaveCycles while busy
}

// Decision is what to do after one tick.
type Decision struct {
	// Percent is the GOGC to apply.
	Percent int
	// Release returns the burst's freed memory to the kernel (cns just became quiet).
	Release bool
}

// Next returns the state after window w and what to apply.
func (p Policy) Next(s State, w Window) (State, Decision) {
	if w.Seconds <= 0 {
		return s, p.decide(s, w)
	}
	if !s.Busy {
		if w.Cycles > 0 && float64(w.Cycles)/w.Seconds >= p.EnterCycles {
			s = State{Busy: true, perIdleCycle: float64(w.Allocated) / float64(w.Cycles)}
		}
		return s, p.decide(s, w)
	}
	if wouldCollect := float64(w.Allocated) / w.Seconds / s.perIdleCycle; wouldCollect >= p.LeaveCycles {
		s.quiet = 0
	} else if s.quiet++; s.quiet >= p.QuietTicks {
		return State{}, Decision{Percent: p.IdlePercent, Release: true}
	}
	return s, p.decide(s, w)
}

func (p Policy) decide(s State, w Window) Decision {
	if !s.Busy {
		return Decision{Percent: p.IdlePercent}
	}
	return Decision{Percent: p.busyPercent(w)}
}

// busyPercent is the GOGC whose goal is BusyHeap for this heap, bounded so that the runtime's
// own minimum (heapMinimum×GOGC/100) does not pass BusyHeap either; never under IdlePercent.
func (p Policy) busyPercent(w Window) int {
	live := max(w.Live, 1<<20) // before the first collection the runtime reports 0
	if live >= p.BusyHeap {
		return p.IdlePercent
	}
	byGoal := (p.BusyHeap - live) * 100 / (live + w.Stacks + w.Globals)
	byMinimum := p.BusyHeap * 100 / heapMinimum
	return max(p.IdlePercent, int(min(byGoal, byMinimum)))
}
