package gctune

import "testing"

const mib = 1 << 20

func TestBusyPercentMakesTheGoalTheBusyHeap(t *testing.T) {
	p := DefaultPolicy() // 16 MiB, idle 50
	for _, tc := range []struct {
		name                  string
		live, stacks, globals uint64
		want                  int
	}{
		// (16-2)/2 → 700, but the runtime's minimum at 700 would be 28 MiB: 400 → 16 MiB.
		{"small heap: the runtime's minimum bounds it", 2 * mib, 0, 0, 400},
		{"no collection yet: read as 1 MiB", 0, 0, 0, 400},
		{"stacks and globals are scanned too: 4 MiB live, 1 MiB of stacks", 4 * mib, 1 * mib, 0, 240},
		{"8 MiB live, 1 MiB of globals", 8 * mib, 0, 1 * mib, 88},
		{"12 MiB live: 33 is under idle, idle stays", 12 * mib, 0, 0, 50},
		{"live past the busy heap", 40 * mib, 0, 0, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.busyPercent(Window{Live: tc.live, Stacks: tc.stacks, Globals: tc.globals}); got != tc.want {
				t.Errorf("busyPercent = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestNextFollowsHowOftenTheCollectorWouldRun(t *testing.T) {
	p := DefaultPolicy()       // enter at 8 collections/s, leave under 2/s (at the idle goal) for 2 ticks
	const perCycle = 1.5 * mib // what cns allocates per collection at GOGC 50
	// a tick of half a second with n collections at the idle goal, or its allocations
	idle := func(n uint64) Window {
		return Window{Seconds: 0.5, Cycles: n, Allocated: uint64(float64(n) * perCycle), Live: 2 * mib}
	}
	busy := func(wouldBe float64) Window { // at the busy goal: rare collections, same allocations
		return Window{Seconds: 0.5, Cycles: 0, Allocated: uint64(wouldBe * 0.5 * perCycle), Live: 2 * mib}
	}
	type step struct {
		w       Window
		busy    bool
		percent int
		release bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"idle stays idle under 8 collections a second", []step{
			{idle(0), false, 50, false}, {idle(3), false, 50, false}, {idle(1), false, 50, false}}},
		{"one big allocation is one collection, not a burst", []step{
			{Window{Seconds: 0.5, Cycles: 1, Allocated: 20 * mib, Live: 2 * mib}, false, 50, false}}},
		{"8 a second raise the goal at once", []step{
			{idle(1), false, 50, false}, {idle(4), true, 400, false}, {busy(60), true, 400, false}}},
		{"between the thresholds a busy cns stays busy", []step{
			{idle(20), true, 400, false}, {busy(3), true, 400, false}, {busy(5), true, 400, false}}},
		{"two quiet ticks end the burst and release once", []step{
			{idle(20), true, 400, false},
			{busy(1), true, 400, false},
			{busy(0), false, 50, true},
			{idle(0), false, 50, false}}},
		{"a busy tick resets the quiet count", []step{
			{idle(20), true, 400, false},
			{busy(1), true, 400, false}, {busy(2), true, 400, false},
			{busy(1), true, 400, false}, {busy(0), false, 50, true}}},
		{"an empty window changes nothing", []step{
			{idle(20), true, 400, false}, {Window{Live: 2 * mib}, true, 400, false}, {busy(9), true, 400, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s State
			for i, st := range tc.steps {
				var d Decision
				s, d = p.Next(s, st.w)
				if s.Busy != st.busy || d.Percent != st.percent || d.Release != st.release {
					t.Fatalf("tick %d (%d collections, %.1f MiB): busy %v, GOGC %d, release %v; want %v, %d, %v",
						i, st.w.Cycles, float64(st.w.Allocated)/mib, s.Busy, d.Percent, d.Release, st.busy, st.percent, st.release)
				}
			}
		})
	}
}
