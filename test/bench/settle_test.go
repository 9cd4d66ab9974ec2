package bench

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	"github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
	"github.com/vnet-cni/vnet-cni/test/stack"
)

// countingPool counts GetPool calls and runs after once, after the first one returns.
type countingPool struct {
	cnsv1grpc.PoolServiceClient
	reads atomic.Int32
	after func()
}

func (p *countingPool) GetPool(ctx context.Context, in *cnsv1.GetPoolRequest, opts ...grpc.CallOption) (*cnsv1.GetPoolResponse, error) {
	r, err := p.PoolServiceClient.GetPool(ctx, in, opts...)
	if p.reads.Add(1) == 1 {
		go p.after()
	}
	return r, err
}

// TestSettleFollowsThePoolsEvents: the change settle waits for happens after its first read,
// and its reads are an hour apart: it can only see the change through an event, and it must
// not read the pool again (each read is cns CPU a step charges to its ADDs).
func TestSettleFollowsThePoolsEvents(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	s.WaitFor("ready", func(p *cnsv1.GetPoolResponse) bool { return p.GetCounts().GetAvailable() > 0 })
	requested := make(chan error, 1)
	pool := &countingPool{PoolServiceClient: s.Pool, after: func() {
		_, err := s.Request(s.Ctx(), "settle")
		requested <- err
	}}
	err := settleEvery(pool, time.Hour, func(c *cnsv1.PoolCounts) bool { return c.GetAssigned() == 1 })
	// cns publishes the event before its answer reaches the client: wait for the answer too.
	if rerr := <-requested; rerr != nil {
		t.Fatal(rerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if n := pool.reads.Load(); n != 1 {
		t.Fatalf("%d reads of the pool, want the first alone", n)
	}
}
