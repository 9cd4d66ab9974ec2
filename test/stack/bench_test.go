package stack

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
)

// countingIPAM counts each container ID's requests and releases, and fails the call numbered
// failAt (from 1) when set. Like a gRPC client, it refuses a call whose ctx has ended.
type countingIPAM struct {
	cnsv1grpc.IPAMServiceClient
	mu       sync.Mutex
	held     map[string]bool // ID → assigned now
	calls    int
	failAt   int
	requests map[string]int
	overlaps int // a request for an ID that already holds an address: two clients shared it
}

func (c *countingIPAM) call(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.calls == c.failAt {
		return errors.New("injected")
	}
	return nil
}

func (c *countingIPAM) RequestIPs(ctx context.Context, in *cnsv1.RequestIPsRequest, _ ...grpc.CallOption) (*cnsv1.RequestIPsResponse, error) {
	if err := c.call(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held[in.GetContainerId()] {
		c.overlaps++
	}
	c.held[in.GetContainerId()] = true
	c.requests[in.GetContainerId()]++
	return &cnsv1.RequestIPsResponse{}, nil
}

func (c *countingIPAM) ReleaseIPs(ctx context.Context, in *cnsv1.ReleaseIPsRequest, _ ...grpc.CallOption) (*cnsv1.ReleaseIPsResponse, error) {
	if err := c.call(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.held, in.GetContainerId())
	return &cnsv1.ReleaseIPsResponse{}, nil
}

func newCounting(failAt int) *countingIPAM {
	return &countingIPAM{held: map[string]bool{}, requests: map[string]int{}, failAt: failAt}
}

func TestPairsMakesExactlyNPairsFromItsClientsOwnIDs(t *testing.T) {
	c := newCounting(0)
	const n = 1000
	if err := Pairs(t.Context(), c, "t-", n); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, k := range c.requests {
		total += k
	}
	if total != n || c.calls != 2*n {
		t.Errorf("%d requests and %d calls, want %d and %d", total, c.calls, n, 2*n)
	}
	// A client may find no pair left when it starts, so up to PairsClients IDs.
	if len(c.requests) > PairsClients || c.overlaps != 0 || len(c.held) != 0 {
		t.Errorf("%d container IDs (want at most %d), %d requests for an ID that held an address, %d left held",
			len(c.requests), PairsClients, c.overlaps, len(c.held))
	}
}

func TestPairsStopsAtTheFirstError(t *testing.T) {
	c := newCounting(100)
	err := Pairs(t.Context(), c, "t-", 1_000_000)
	if err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("err = %v, want the injected failure", err)
	}
	// Every client stops after at most the call it had begun when the failure ended ctx.
	if c.calls > 100+PairsClients {
		t.Errorf("%d calls after the failure at call 100", c.calls)
	}
}
