package gctune

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Every is how often Run looks at the collector: a burst is seen within half a second, and
// an idle cns wakes twice a second for it.
const Every = 500 * time.Millisecond

// Runtime is the part of the Go runtime Run steers.
type Runtime interface {
	// Read returns the runtime's counters since the process started (Seconds unset) and its
	// heap as of the last collection.
	Read() Window
	SetPercent(percent int)
	// Release collects and returns every free page to the kernel.
	Release()
}

// Start runs DefaultPolicy on the Go runtime until ctx ends and reports true, unless the
// operator set $GOGC: their value then stays, fixed. GOMEMLIMIT needs nothing here: the
// runtime keeps the lower of the two goals.
func Start(ctx context.Context, lookupEnv func(string) (string, bool), log *slog.Logger) bool {
	if v, set := lookupEnv("GOGC"); set && v != "" {
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
	prev, last := rt.Read(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// The window ends when the counters are read, not when the tick was due: on busy
		// cores the two can be far apart.
		cur, now := rt.Read(), time.Now()
		w := cur
		w.Seconds, w.Cycles, w.Allocated = now.Sub(last).Seconds(), cur.Cycles-prev.Cycles, cur.Allocated-prev.Allocated
		prev, last = cur, now
		was := s.Busy
		var d Decision
		s, d = p.Next(s, w)
		if d.Percent != percent {
			percent = d.Percent
			rt.SetPercent(percent)
		}
		if d.Release {
			rt.Release()
		}
		if s.Busy != was {
			log.Debug("garbage collector target changed", "busy", s.Busy, "GOGC", percent,
				"collectionsPerSecond", float64(w.Cycles)/w.Seconds, "liveMiB", w.Live>>20)
		}
	}
}

// goRuntime is the process's own runtime.
type goRuntime struct{ samples []metrics.Sample }

// NewGoRuntime returns the Runtime of this process.
func NewGoRuntime() Runtime {
	names := []string{"/gc/cycles/total:gc-cycles", "/gc/heap/allocs:bytes", "/gc/heap/live:bytes",
		"/gc/scan/stack:bytes", "/gc/scan/globals:bytes"}
	g := &goRuntime{samples: make([]metrics.Sample, len(names))}
	for i, n := range names {
		g.samples[i].Name = n
	}
	return g
}

func (g *goRuntime) Read() Window {
	metrics.Read(g.samples)
	v := func(i int) uint64 { return g.samples[i].Value.Uint64() }
	return Window{Cycles: v(0), Allocated: v(1), Live: v(2), Stacks: v(3), Globals: v(4)}
}

func (*goRuntime) SetPercent(percent int) { debug.SetGCPercent(percent) }

func (*goRuntime) Release() { debug.FreeOSMemory() }
