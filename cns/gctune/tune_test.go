package gctune

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeRuntime allocates at a rate the test sets, in virtual time.
type fakeRuntime struct {
	mu       sync.Mutex
	rate     uint64 // bytes per second
	at       time.Time
	alloc    uint64
	percents []int
	releases int
}

func (f *fakeRuntime) Read() (uint64, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	f.alloc += uint64(float64(f.rate) * now.Sub(f.at).Seconds())
	f.at = now
	return f.alloc, 2 * mib
}

func (f *fakeRuntime) setRate(r uint64) {
	f.Read() // what was allocated at the old rate
	f.mu.Lock()
	f.rate = r
	f.mu.Unlock()
}

func (f *fakeRuntime) SetPercent(p int) {
	f.mu.Lock()
	f.percents = append(f.percents, p)
	f.mu.Unlock()
}
func (f *fakeRuntime) Release() { f.mu.Lock(); f.releases++; f.mu.Unlock() }

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

		rt.setRate(50 * mib)
		time.Sleep(Every)
		expect("one tick into a burst", []int{50, 400}, 0)
		time.Sleep(3 * time.Second)
		expect("3 s into the burst (set once, not every tick)", []int{50, 400}, 0)

		rt.setRate(0)
		time.Sleep(3 * Every)
		expect("three quiet ticks", []int{50, 400}, 0)
		time.Sleep(Every)
		expect("four quiet ticks", []int{50, 400, 50}, 1)
		time.Sleep(5 * time.Second)
		expect("idle again", []int{50, 400, 50}, 1)

		cancel()
		<-done
	})
}

func TestGoRuntimeReadsAllocationsAndTheLiveHeap(t *testing.T) {
	rt := NewGoRuntime()
	a0, _ := rt.Read()
	keep := make([][]byte, 0, 64)
	for range 64 {
		keep = append(keep, make([]byte, 64<<10))
	}
	runtime.GC()
	a1, live := rt.Read()
	if a1-a0 < 4*mib {
		t.Errorf("allocated %d bytes in between, want at least 4 MiB", a1-a0)
	}
	if live < 4*mib {
		t.Errorf("live heap %d bytes after a collection while 4 MiB are held", live)
	}
	runtime.KeepAlive(keep)
}

func TestStartLeavesTheOperatorsGOGC(t *testing.T) {
	before := debug.SetGCPercent(77)
	defer debug.SetGCPercent(before)
	if Start(t.Context(), func(k string) (string, bool) { return "77", k == "GOGC" }, quiet) {
		t.Fatal("Start ran the tuner with $GOGC set")
	}
	if got := debug.SetGCPercent(77); got != 77 {
		t.Errorf("GOGC = %d after Start with $GOGC set, want the operator's 77", got)
	}
}
