package unary_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/vnet-cni/vnet-cni/plugin/unary"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
)

// server is a grpc-go server on a unix socket whose answers the test sets.
type server struct {
	cnsv1grpc.UnimplementedIPAMServiceServer
	cnsv1grpc.UnimplementedPoolServiceServer
	request func(context.Context, *cnsv1.RequestIPsRequest) (*cnsv1.RequestIPsResponse, error)
	allocs  []*cnsv1.Allocation
}

func (s *server) RequestIPs(ctx context.Context, r *cnsv1.RequestIPsRequest) (*cnsv1.RequestIPsResponse, error) {
	return s.request(ctx, r)
}

func (s *server) ListAllocations(context.Context, *cnsv1.ListAllocationsRequest) (*cnsv1.ListAllocationsResponse, error) {
	return &cnsv1.ListAllocationsResponse{Allocations: s.allocs}, nil
}

func start(t *testing.T, s *server) *unary.Conn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	cnsv1grpc.RegisterIPAMServiceServer(g, s)
	cnsv1grpc.RegisterPoolServiceServer(g, s)
	go func() { _ = g.Serve(l) }()
	t.Cleanup(g.Stop)
	c := unary.Dial(sock)
	t.Cleanup(func() { c.Close() })
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestAnswerIsDecoded(t *testing.T) {
	want := &cnsv1.RequestIPsResponse{IpConfigs: []*cnsv1.IPConfig{{Address: "10.1.0.7/16", Gateway: "10.1.0.1", SubnetPrefix: "10.1.0.0/16"}}}
	var got cnsv1.RequestIPsResponse
	c := start(t, &server{request: func(_ context.Context, r *cnsv1.RequestIPsRequest) (*cnsv1.RequestIPsResponse, error) {
		if r.GetContainerId() != "c1" || r.GetIfname() != "eth0" {
			return nil, status.Errorf(codes.InvalidArgument, "request arrived as %v", r)
		}
		return want, nil
	}})
	if err := c.Invoke(ctx(t), cnsv1grpc.IPAMService_RequestIPs_FullMethodName, &cnsv1.RequestIPsRequest{ContainerId: "c1", Ifname: "eth0"}, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, want) {
		t.Fatalf("got %v, want %v", &got, want)
	}
}

// A status with a message that needs percent-encoding and an ErrorInfo detail arrives whole,
// in the trailers-only form grpc-go uses for an error before any message.
func TestErrorStatusKeepsCodeMessageAndDetails(t *testing.T) {
	const msg = "pool empty: 100% of 250 addresses assigned; café"
	c := start(t, &server{request: func(context.Context, *cnsv1.RequestIPsRequest) (*cnsv1.RequestIPsResponse, error) {
		s, err := status.New(codes.ResourceExhausted, msg).WithDetails(&errdetails.ErrorInfo{Reason: "Full", Domain: cnsv1.ErrorDomain})
		if err != nil {
			return nil, err
		}
		return nil, s.Err()
	}})
	err := c.Invoke(ctx(t), cnsv1grpc.IPAMService_RequestIPs_FullMethodName, &cnsv1.RequestIPsRequest{}, new(cnsv1.RequestIPsResponse))
	var e *unary.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an answer", err, err)
	}
	if e.Code != codes.ResourceExhausted || e.Message != msg {
		t.Fatalf("got %v %q, want ResourceExhausted %q", e.Code, e.Message, msg)
	}
	if len(e.Details) != 1 || e.Details[0].TypeURL != "type.googleapis.com/google.rpc.ErrorInfo" {
		t.Fatalf("details %+v, want one ErrorInfo", e.Details)
	}
	var info errdetails.ErrorInfo
	if err := proto.Unmarshal(e.Details[0].Value, &info); err != nil || info.GetDomain() != cnsv1.ErrorDomain || info.GetReason() != "Full" {
		t.Fatalf("ErrorInfo %v (%v)", &info, err)
	}
}

func TestUnknownMethodIsUnimplemented(t *testing.T) {
	c := start(t, &server{})
	err := c.Invoke(ctx(t), "/cns.v1.IPAMService/NoSuchMethod", &cnsv1.StatusRequest{}, new(cnsv1.StatusResponse))
	var e *unary.Error
	if !errors.As(err, &e) || e.Code != codes.Unimplemented {
		t.Fatalf("got %v, want Unimplemented", err)
	}
}

// The caller's deadline reaches the server as grpc-timeout, so cns stops waiting for the cloud
// when the plugin has given up.
func TestDeadlineReachesTheServer(t *testing.T) {
	serverDeadline := make(chan time.Duration, 1)
	c := start(t, &server{request: func(ctx context.Context, _ *cnsv1.RequestIPsRequest) (*cnsv1.RequestIPsResponse, error) {
		dl, ok := ctx.Deadline()
		if !ok {
			serverDeadline <- 0
			return nil, status.Error(codes.Internal, "no deadline")
		}
		serverDeadline <- time.Until(dl)
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}})
	cctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := c.Invoke(cctx, cnsv1grpc.IPAMService_RequestIPs_FullMethodName, &cnsv1.RequestIPsRequest{}, new(cnsv1.RequestIPsResponse))
	if left := <-serverDeadline; left <= 0 || left > 300*time.Millisecond {
		t.Fatalf("server saw %v left, want a deadline within the caller's 300ms", left)
	}
	var e *unary.Error
	if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &e) && e.Code == codes.DeadlineExceeded) {
		t.Fatalf("got %v, want the deadline", err)
	}
}

// An answer larger than the HTTP/2 windows and frames (here about 200 KiB) is read whole.
func TestLargeAnswerIsReadWhole(t *testing.T) {
	s := &server{}
	for i := range 2000 {
		s.allocs = append(s.allocs, &cnsv1.Allocation{ContainerId: fmt.Sprintf("%064d", i), Ifname: "eth0", Address: "10.1.0.7/32", PodName: "p"})
	}
	c := start(t, s)
	var got cnsv1.ListAllocationsResponse
	if err := c.Invoke(ctx(t), cnsv1grpc.PoolService_ListAllocations_FullMethodName, &cnsv1.ListAllocationsRequest{}, &got); err != nil {
		t.Fatal(err)
	}
	if n := len(got.GetAllocations()); n != 2000 || got.GetAllocations()[1999].GetContainerId() != s.allocs[1999].GetContainerId() {
		t.Fatalf("got %d allocations, want 2000 in order", n)
	}
}

func TestNoServerIsATransportError(t *testing.T) {
	c := unary.Dial(filepath.Join(t.TempDir(), "none.sock"))
	defer c.Close()
	err := c.Invoke(ctx(t), cnsv1grpc.IPAMService_Status_FullMethodName, &cnsv1.StatusRequest{}, new(cnsv1.StatusResponse))
	var e *unary.Error
	if !errors.Is(err, unary.ErrTransport) || errors.As(err, &e) {
		t.Fatalf("got %v, want a transport error and no status", err)
	}
}

// A server that closes the connection mid-call gives a transport error, not a status.
func TestConnectionLostBeforeTheAnswerIsATransportError(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 64)
		_, _ = conn.Read(buf) // the preface has arrived: drop the connection without a word
		conn.Close()
	}()
	c := unary.Dial(sock)
	defer c.Close()
	err = c.Invoke(ctx(t), cnsv1grpc.IPAMService_Status_FullMethodName, &cnsv1.StatusRequest{}, new(cnsv1.StatusResponse))
	if !errors.Is(err, unary.ErrTransport) {
		t.Fatalf("got %v, want a transport error", err)
	}
}
