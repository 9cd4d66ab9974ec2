package stack

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vnet-cni/vnet-cni/cns"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
)

// BenchPairs measures RequestIPs+ReleaseIPs pairs over the unix socket with the durable
// (fsynced) store, from PairsClients concurrent clients (Pairs), and reports pairs/s. Cooldown
// is off so a released address is reusable at once; the pool is warm, so no cloud call is on
// the path. It runs cns in this process at Go's default GOGC (cmd/cns's gctune is not started),
// a developer's microbenchmark: `make bench` measures the cns process (test/bench, pairs).
// It also reports the process's CPU time per pair (cns and the in-process clients together):
// on a shared machine pairs/s follows the CPU left to it, CPU per pair less so.
func BenchPairs(b *testing.B) {
	s := Start(b, Options{Config: func(c *cns.Config) {
		c.Pool.Limits.Cooldown = 0
		c.Pool.Limits.MinFree, c.Pool.Limits.MaxFree, c.Pool.Limits.BatchSize = 96, 200, 32
	}})
	s.WaitFor("warm pool", func(p *cnsv1.GetPoolResponse) bool { return p.GetCounts().GetAvailable() >= 96 })
	cpu0, err := ProcessCPU()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	if err := Pairs(context.Background(), s.IPAM, "bench-", b.N); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	cpu1, err := ProcessCPU()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
	b.ReportMetric(float64(cpu1-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/pair")
}

// PairsClients is how many client goroutines Pairs runs: far more than the cores, as many
// plugin processes in a pod burst would be, so cns's group commit has requests to group.
const PairsClients = 64

// Pairs makes n RequestIPs+ReleaseIPs pairs through ipam from PairsClients goroutines sharing
// its connection, each with its own container ID (prefix and the goroutine's number). The
// first error stops every goroutine (at its next pair) and is returned; ctx bounds every call.
func Pairs(ctx context.Context, ipam cnsv1grpc.IPAMServiceClient, prefix string, n int) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	for i := range PairsClients {
		wg.Go(func() {
			id := fmt.Sprint(prefix, i)
			for ctx.Err() == nil && left.Add(-1) >= 0 {
				if _, err := ipam.RequestIPs(ctx, &cnsv1.RequestIPsRequest{ContainerId: id, Ifname: "eth0"}); err != nil {
					cancel(fmt.Errorf("RequestIPs %s: %w", id, err))
					return
				}
				if _, err := ipam.ReleaseIPs(ctx, &cnsv1.ReleaseIPsRequest{ContainerId: id, Ifname: "eth0"}); err != nil {
					cancel(fmt.Errorf("ReleaseIPs %s: %w", id, err))
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// ProcessCPU is the user and system time this process has used (getrusage RUSAGE_SELF):
// every thread, the Go runtime's and the garbage collector's included.
func ProcessCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
