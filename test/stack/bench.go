package stack

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vnet-cni/vnet-cni/cns"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
)

// BenchPairs measures RequestIPs+ReleaseIPs pairs over the unix socket with the durable
// (fsynced) store, from 64 concurrent clients, and reports pairs/s. Cooldown is off so a
// released address is reusable at once; the pool is warm, so no cloud call is on the path.
// It also reports the process's CPU time per pair (cns and the in-process clients together):
// on a shared machine pairs/s follows the CPU left to it, CPU per pair less so.
func BenchPairs(b *testing.B) {
	s := Start(b, Options{Config: func(c *cns.Config) {
		c.Pool.Limits.Cooldown = 0
		c.Pool.Limits.MinFree, c.Pool.Limits.MaxFree, c.Pool.Limits.BatchSize = 96, 200, 32
	}})
	s.WaitFor("warm pool", func(p *cnsv1.GetPoolResponse) bool { return p.GetCounts().GetAvailable() >= 96 })
	var next atomic.Int64
	ctx := context.Background()
	b.SetParallelism(32) // 64 clients on 2 cores
	cpu0 := processCPU(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := fmt.Sprint("bench-", next.Add(1))
		for pb.Next() {
			if _, err := s.IPAM.RequestIPs(ctx, &cnsv1.RequestIPsRequest{ContainerId: id, Ifname: "eth0"}); err != nil {
				b.Error(err)
				return
			}
			if _, err := s.IPAM.ReleaseIPs(ctx, &cnsv1.ReleaseIPsRequest{ContainerId: id, Ifname: "eth0"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/pair")
}

// processCPU is the user and system time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
