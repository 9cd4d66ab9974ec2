package cns_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
	"github.com/vnet-cni/vnet-cni/test/stack"
)

// Anyone on the host reaches the read-only TCP listener: its WatchPool subscribers are
// bounded (the one over the bound gets ResourceExhausted), and idle subscribers that never
// read do not keep RequestIPs from completing. Before, subscribers were unbounded.
func TestWatchPoolSubscribersAreBoundedOnTCP(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	conn, err := grpc.NewClient(s.TCPAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pool := cnsv1grpc.NewPoolServiceClient(conn)
	ctx, cancel := context.WithCancel(s.Ctx())
	defer cancel()
	const bound = 16
	// Streams reach the server in any order: of bound+1, exactly one is refused.
	refused := make(chan error, bound+1)
	for i := range bound + 1 {
		w, err := pool.WatchPool(ctx, &cnsv1.WatchPoolRequest{})
		if err != nil {
			t.Fatalf("watcher %d: %v", i, err)
		}
		go func() { // only its first read tells how the stream began; then it idles
			if _, err := w.Recv(); status.Code(err) == codes.ResourceExhausted {
				refused <- err
			}
		}()
	}
	select {
	case <-refused:
	case <-ctx.Done():
		t.Fatalf("%d watchers over the bound of %d all accepted", bound+1, bound)
	}
	for i := range 20 { // the idle watchers' buffers fill; requests go on
		if _, err := s.Request(s.Ctx(), "c"+string(rune('a'+i))); err != nil {
			t.Fatalf("request %d with idle watchers: %v", i, err)
		}
	}
}
