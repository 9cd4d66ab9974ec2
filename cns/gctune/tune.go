package gctune

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Every is how often Run samples the allocation rate: a burst is seen within a quarter of a
// second, and an idle cns wakes four times a second for it.
const Every = 250 * time.Millisecond

// Runtime is the part of the Go runtime Run steers.
type Runtime interface {
	// Read returns the bytes allocated since the process started and the live heap as of the
	// last collection.
	Read() (allocated, live uint64)
	SetPercent(percent int)
	// Release collects and returns every free page to the kernel.
	Release()
}

// Start runs DefaultPolicy on the Go runtime until ctx ends and reports true, unless the
// operator set $GOGC: their value then stays, fixed. GOMEMLIMIT needs nothing here: the
// runtime keeps the lower of the two goals.
func Start(ctx context.Context, lookupEnv func(string) (string, bool), log *slog.Logger) bool {
	if v, set := lookupEnv("GOGC"); set {
		log.Info("GOGC set by the operator: the collector's target stays fixed", "GOGC", v)
		return false
	}
	go Run(ctx, DefaultPolicy(), NewGoRuntime(), Every, log)
	return true
}

// Run applies p to rt every tick until ctx ends. It starts quiet, at p.IdlePercent.
func Run(ctx context.Context, p Policy, rt Runtime, every time.Duration, log *slog.Logger) {
	percent := p.IdlePercent
	rt.SetPercent(percent)
	t := time.NewTicker(every)
	defer t.Stop()
	var s State
	allocated, _ := rt.Read()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			a, live := rt.Read()
			rate := float64(a-allocated) / now.Sub(last).Seconds()
			allocated, last = a, now
			was := s.Busy
			var d Decision
			s, d = p.Next(s, rate, live)
			if d.Percent != percent {
				percent = d.Percent
				rt.SetPercent(percent)
			}
			if d.Release {
				rt.Release()
			}
			if s.Busy != was {
				log.Debug("garbage collector target changed", "busy", s.Busy, "GOGC", percent,
					"allocMiBPerSecond", int(rate)>>20, "liveMiB", live>>20)
			}
		}
	}
}

// goRuntime is the process's own runtime.
type goRuntime struct{ samples []metrics.Sample }

// NewGoRuntime returns the Runtime of this process.
func NewGoRuntime() Runtime {
	return &goRuntime{samples: []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/live:bytes"}}}
}

func (g *goRuntime) Read() (allocated, live uint64) {
	metrics.Read(g.samples)
	return g.samples[0].Value.Uint64(), g.samples[1].Value.Uint64()
}

func (*goRuntime) SetPercent(percent int) { debug.SetGCPercent(percent) }

func (*goRuntime) Release() { debug.FreeOSMemory() }
