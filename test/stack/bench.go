package stack

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/vnet-cni/vnet-cni/cns"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
)

// BenchPairs measures RequestIPs+ReleaseIPs pairs over the unix socket with the durable
// (fsynced) store, from 64 concurrent clients, and reports pairs/s. Cooldown is off so a
// released address is reusable at once; the pool is warm, so no cloud call is on the path.
func BenchPairs(b *testing.B) {
	s := Start(b, Options{Config: func(c *cns.Config) {
		c.Pool.Limits.Cooldown = 0
		c.Pool.Limits.MinFree, c.Pool.Limits.MaxFree, c.Pool.Limits.BatchSize = 96, 200, 32
	}})
	s.WaitFor("warm pool", func(p *cnsv1.GetPoolResponse) bool { return p.GetCounts().GetAvailable() >= 96 })
	var next atomic.Int64
	ctx := context.Background()
	b.SetParallelism(32) // 64 clients on 2 cores
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
}
