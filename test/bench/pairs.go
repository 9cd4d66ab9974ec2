package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	"github.com/vnet-cni/vnet-cni/test/k8s"
	"github.com/vnet-cni/vnet-cni/test/stack"
)

// Pairs is the gRPC pairs/s result: RequestIPs+ReleaseIPs pairs against a cns process.
type Pairs struct {
	Clients int     `json:"clients"`
	Warmup  int     `json:"warmup"` // pairs made first and not counted (at least pairsWarmupFor)
	Pairs   int     `json:"pairs"`  // pairs measured
	PerS    float64 `json:"per_s"`
	// CNSCPUMicros is cns's CPU time per measured pair (all its threads).
	CNSCPUMicros float64 `json:"cns_cpu_us"`
	// ClientCPUMicros is the bench process's CPU time per measured pair (getrusage): the client
	// goroutines, grpc-go's client side and the bench's Go runtime, and mockarm, which serves
	// cns's periodic NIC reads from this process (the pool is warm: no NIC write).
	ClientCPUMicros float64 `json:"client_cpu_us"`
	// NICWrites during the measured pairs: 0 when the warm-up left the pool big enough.
	NICWrites     int     `json:"nic_writes"`
	CNSPeakRSSMiB float64 `json:"cns_peak_rss_mib"` // VmHWM: the peak resident set, reached during the pairs
	CNSIdleRSSMiB float64 `json:"cns_idle_rss_mib"` // once it stops falling (at most idleWithin later)
}

const (
	pairsWarmup    = 1_000           // a round of the warm-up
	pairsWarmupFor = 2 * time.Second // cns's collector settles to the load within a second (cns/gctune)
	pairsMeasured  = 40_000
	pairsWithin    = 5 * time.Minute // the whole step: at 1,000 pairs/s it would take 42 s
	idleWithin     = 5 * time.Second // longest wait for cns's RSS to stop falling (idleStatus)
)

// pairs runs the loop of `go test -bench RequestReleasePairs ./cns/` (stack.Pairs) against a
// cns process started as `make run` starts it, state on disk, with the in-process benchmark's
// pool knobs: no cooldown, so a released address is reusable at once, and a warm pool of at
// least 96, so no cloud call is on the path.
func pairs(ctx context.Context, c Config, r *Results) error {
	v, err := newVNet(c, "pairs", []string{"--cooldown=0", "--min-free=96", "--max-free=200", "--batch-size=32"}, 0)
	if err != nil {
		return err
	}
	defer v.Close()
	n := v.Nodes[0]
	if err := settle(n.Pool, func(c *cnsv1.PoolCounts) bool { return c.GetAvailable() >= 96 }); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, pairsWithin)
	defer cancel()
	// The load generator should not be what it measures: a lighter GC in this process leaves
	// the two cores to cns (its client CPU is reported apart).
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	warmup := 0
	for start := time.Now(); time.Since(start) < pairsWarmupFor; warmup += pairsWarmup {
		if err := stack.Pairs(ctx, n.IPAM, "warm-", pairsWarmup); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	cpu0, err := cpuOfBoth(n.PID())
	if err != nil {
		return err
	}
	writes, start := v.Mock.Stats().Writes, time.Now()
	if err := stack.Pairs(ctx, n.IPAM, "bench-", pairsMeasured); err != nil {
		return err
	}
	took := time.Since(start)
	cpu1, err := cpuOfBoth(n.PID())
	if err != nil {
		return err
	}
	after, err := procStatusMiB(n.PID())
	if err != nil {
		return err
	}
	idle, err := idleStatus(n.PID(), idleWithin)
	if err != nil {
		return err
	}
	perPair := func(d time.Duration) float64 { return round(float64(d) / float64(time.Microsecond) / pairsMeasured) }
	r.Pairs = Pairs{Clients: stack.PairsClients, Warmup: warmup, Pairs: pairsMeasured,
		PerS: math.Round(pairsMeasured / took.Seconds()), CNSCPUMicros: perPair(cpu1[0] - cpu0[0]), ClientCPUMicros: perPair(cpu1[1] - cpu0[1]),
		NICWrites: v.Mock.Stats().Writes - writes, CNSPeakRSSMiB: after["VmHWM:"], CNSIdleRSSMiB: idle["VmRSS:"]}
	return nil
}

// cpuOfBoth is the CPU time cns (pid) has used, and this process.
func cpuOfBoth(pid int) ([2]time.Duration, error) {
	cns, err := cpuTime(pid)
	if err != nil {
		return [2]time.Duration{}, err
	}
	self, err := stack.ProcessCPU()
	return [2]time.Duration{cns, self}, err
}

// idleStatus polls a process's /proc status until its VmRSS has not fallen for two seconds,
// or within has passed, and returns the reading with the lowest VmRSS. cns returns a burst's
// pages a quiet second after it (cns/gctune); the background scavenger's smaller returns may
// keep the poll going to within.
func idleStatus(pid int, within time.Duration) (map[string]float64, error) {
	var low map[string]float64
	lowAt := time.Now()
	var err error
	_ = k8s.Poll(within, func() bool { // at the deadline the lowest so far is the answer
		var st map[string]float64
		if st, err = procStatusMiB(pid); err != nil {
			return true
		}
		if low == nil || st["VmRSS:"] < low["VmRSS:"] {
			low, lowAt = st, time.Now()
		}
		return time.Since(lowAt) >= 2*time.Second
	})
	return low, err
}

// procStatusMiB reads the kB fields of /proc/<pid>/status ("VmRSS:", "RssAnon:", …) in MiB.
func procStatusMiB(pid int) (map[string]float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		if kb, err := strconv.Atoi(f[1]); err == nil {
			out[f[0]] = round(float64(kb) / 1024)
		}
	}
	return out, nil
}
