package cns_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
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
	pool := cnsv1.NewPoolServiceClient(conn)
	ctx, cancel := context.WithCancel(s.Ctx())
	defer cancel()
	const bound = 16
	for i := range bound + 1 {
		w, err := pool.WatchPool(ctx, &cnsv1.WatchPoolRequest{})
		if err == nil && i == bound {
			_, err = w.Recv() // a stream's status arrives with its first read
		}
		if i < bound && err != nil {
			t.Fatalf("watcher %d: %v", i, err)
		}
		if i == bound && status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("watcher %d over the bound of %d: %v, want ResourceExhausted", i, bound, err)
		}
	}
	for i := range 20 { // the idle watchers' buffers fill; requests go on
		if _, err := s.Request(s.Ctx(), "c"+string(rune('a'+i))); err != nil {
			t.Fatalf("request %d with idle watchers: %v", i, err)
		}
	}
}
