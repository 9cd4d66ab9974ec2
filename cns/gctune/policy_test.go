package gctune

import "testing"

const mib = 1 << 20

func TestBusyPercentMakesTheGoalTheBusyHeap(t *testing.T) {
	p := DefaultPolicy() // 16 MiB, idle 50
	for _, tc := range []struct {
		name string
		live uint64
		want int
	}{
		// live×(1+7) = 16 MiB, but the runtime's minimum at 700 would be 28 MiB: 400 → 16 MiB.
		{"small heap: the runtime's minimum bounds it", 2 * mib, 400},
		{"no collection yet: read as 1 MiB", 0, 400},
		{"8 MiB live doubles", 8 * mib, 100},
		{"12 MiB live: 33 is under idle, idle stays", 12 * mib, 50},
		{"live past the busy heap", 40 * mib, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.busyPercent(tc.live); got != tc.want {
				t.Errorf("busyPercent(%d MiB) = %d, want %d", tc.live/mib, got, tc.want)
			}
			goal := max(tc.live, mib) * uint64(100+tc.want) / 100
			floor := uint64(heapMinimum) * uint64(tc.want) / 100
			if got := max(goal, floor); tc.live < p.BusyHeap/2 && got > p.BusyHeap {
				t.Errorf("goal %d MiB passes the busy heap", got/mib)
			}
		})
	}
}

func TestNextEntersOnAFastRateAndLeavesAfterQuietTicks(t *testing.T) {
	p := DefaultPolicy() // enter 8 MiB/s, leave under 2 MiB/s for 4 ticks
	const live = 2 * mib
	type step struct {
		rate    float64
		busy    bool
		percent int
		release bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"idle stays idle under the enter rate", []step{
			{0, false, 50, false}, {7 * mib, false, 50, false}, {4 * mib, false, 50, false}}},
		{"a burst raises the goal at once", []step{
			{1 * mib, false, 50, false}, {8 * mib, true, 400, false}, {30 * mib, true, 400, false}}},
		{"between the rates a busy cns stays busy", []step{
			{20 * mib, true, 400, false}, {3 * mib, true, 400, false}, {5 * mib, true, 400, false}}},
		{"four quiet ticks in a row end the burst and release once", []step{
			{20 * mib, true, 400, false},
			{0, true, 400, false}, {0, true, 400, false}, {1 * mib, true, 400, false},
			{0, false, 50, true},
			{0, false, 50, false}}},
		{"a busy tick resets the quiet count", []step{
			{20 * mib, true, 400, false},
			{0, true, 400, false}, {0, true, 400, false}, {0, true, 400, false},
			{3 * mib, true, 400, false},
			{0, true, 400, false}, {0, true, 400, false}, {0, true, 400, false},
			{0, false, 50, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s State
			for i, st := range tc.steps {
				var d Decision
				s, d = p.Next(s, st.rate, live)
				if s.Busy != st.busy || d.Percent != st.percent || d.Release != st.release {
					t.Fatalf("tick %d at %.0f MiB/s: busy %v, GOGC %d, release %v; want %v, %d, %v",
						i, st.rate/mib, s.Busy, d.Percent, d.Release, st.busy, st.percent, st.release)
				}
			}
		})
	}
}
