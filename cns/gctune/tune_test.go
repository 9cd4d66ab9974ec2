package gctune

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeRuntime allocates at a rate the test sets, in virtual time, and collects every 1.5 MiB
// at GOGC 50 and every 14 MiB above it, as cns with a 2 MiB live heap does.
type fakeRuntime struct {
	mu       sync.Mutex
	rate     float64 // bytes per second
	at       time.Time
	alloc    float64
	sinceGC  float64
	cycles   uint64
	percent  int
	percents []int
	releases int
}

func (f *fakeRuntime) advance() {
	now := time.Now()
	bytes := f.rate * now.Sub(f.at).Seconds()
	f.at = now
	f.alloc += bytes
	perCycle := 14.0 * mib
	if f.percent <= 50 {
		perCycle = 1.5 * mib
	}
	for f.sinceGC += bytes; f.sinceGC >= perCycle; f.sinceGC -= perCycle {
		f.cycles++
	}
}

func (f *fakeRuntime) Read() Window {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance()
	return Window{Cycles: f.cycles, Allocated: uint64(f.alloc), Live: 2 * mib}
}

func (f *fakeRuntime) setRate(r float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance() // what was allocated at the old rate
	f.rate = r
}

func (f *fakeRuntime) SetPercent(p int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance()
	f.percent = p
	f.percents = append(f.percents, p)
}

func (f *fakeRuntime) Release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releases++
}

func (f *fakeRuntime) seen() ([]int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.percents), f.releases
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestABurstRaisesTheGoalAndItsEndReleasesTheMemory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		rt := &fakeRuntime{at: time.Now()}
		done := make(chan struct{})
		go func() { defer close(done); Run(ctx, DefaultPolicy(), rt, Every, quiet) }()

		expect := func(when string, percents []int, releases int) {
			t.Helper()
			synctest.Wait()
			if p, r := rt.seen(); !slices.Equal(p, percents) || r != releases {
				t.Fatalf("%s: GOGC set to %v, %d releases; want %v, %d", when, p, r, percents, releases)
			}
		}
		time.Sleep(2 * time.Second)
		expect("idle for 2 s", []int{50}, 0)

		rt.setRate(6 * mib) // 4 collections a second
		time.Sleep(3 * time.Second)
		expect("3 s of a steady 6 MiB/s", []int{50}, 0)

		rt.setRate(60 * mib) // 40 a second
		time.Sleep(Every)
		expect("one tick into a burst", []int{50, 400}, 0)
		time.Sleep(3 * time.Second)
		expect("3 s into the burst (set once, not every tick)", []int{50, 400}, 0)

		rt.setRate(6 * mib) // would be 4 a second again at GOGC 50
		time.Sleep(3 * time.Second)
		expect("3 s at a rate between the thresholds", []int{50, 400}, 0)

		rt.setRate(0)
		time.Sleep(Every)
		expect("one quiet tick", []int{50, 400}, 0)
		time.Sleep(Every)
		expect("two quiet ticks", []int{50, 400, 50}, 1)
		time.Sleep(5 * time.Second)
		expect("idle again", []int{50, 400, 50}, 1)

		cancel()
		<-done
	})
}

// The policy's arithmetic against the runtime's own goal: at the percent it computes from
// this process's heap, the runtime aims at BusyHeap.
func TestBusyPercentIsTheRuntimesGoal(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	rt := NewGoRuntime()
	p := DefaultPolicy()
	runtime.GC()
	percent := p.busyPercent(rt.Read())
	rt.SetPercent(percent)
	goal := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(goal)
	got := goal[0].Value.Uint64()
	if got < p.BusyHeap*9/10 || got > p.BusyHeap*11/10 {
		t.Errorf("GOGC %d: the runtime's heap goal is %.1f MiB, want about %d MiB", percent, float64(got)/mib, p.BusyHeap/mib)
	}
}

func TestGoRuntimeReadsCollectionsAllocationsAndTheLiveHeap(t *testing.T) {
	rt := NewGoRuntime()
	w0 := rt.Read()
	keep := make([][]byte, 0, 64)
	for range 64 {
		keep = append(keep, make([]byte, 64<<10))
	}
	runtime.GC()
	w1 := rt.Read()
	if w1.Allocated-w0.Allocated < 4*mib {
		t.Errorf("allocated %d bytes in between, want at least 4 MiB", w1.Allocated-w0.Allocated)
	}
	if w1.Cycles <= w0.Cycles {
		t.Errorf("collections %d then %d after runtime.GC", w0.Cycles, w1.Cycles)
	}
	if w1.Live < 4*mib || w1.Stacks == 0 || w1.Globals == 0 {
		t.Errorf("after a collection with 4 MiB held: live %d, stacks %d, globals %d bytes", w1.Live, w1.Stacks, w1.Globals)
	}
	runtime.KeepAlive(keep)
}

func TestStartLeavesTheOperatorsGOGC(t *testing.T) {
	for _, v := range []string{"77", "off"} {
		if Start(t.Context(), func(k string) (string, bool) { return v, k == "GOGC" }, quiet) {
			t.Errorf("Start ran the tuner with GOGC=%s", v)
		}
	}
}
