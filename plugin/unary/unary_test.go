package unary_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/vnet-cni/vnet-cni/plugin/unary"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
	"github.com/vnet-cni/vnet-cni/proto/cns/v1/contract"
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

func (s *server) GarbageCollect(_ context.Context, r *cnsv1.GarbageCollectRequest) (*cnsv1.GarbageCollectResponse, error) {
	return &cnsv1.GarbageCollectResponse{Kept: uint32(len(r.GetValidAttachments()))}, nil
}

func (s *server) ListAllocations(context.Context, *cnsv1.ListAllocationsRequest) (*cnsv1.ListAllocationsResponse, error) {
	return &cnsv1.ListAllocationsResponse{Allocations: s.allocs}, nil
}

func start(t *testing.T, s *server) conn {
	t.Helper()
	c := dial(serve(t, s))
	t.Cleanup(func() { c.Close() })
	return c
}

// serve runs s on a unix socket until the test ends and returns the socket's path.
func serve(t *testing.T, s *server) string {
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
	return sock
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
		s, err := status.New(codes.ResourceExhausted, msg).WithDetails(&errdetails.ErrorInfo{Reason: "Full", Domain: contract.ErrorDomain})
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
	if e.Code != unary.ResourceExhausted || e.Message != msg {
		t.Fatalf("got %v %q, want ResourceExhausted %q", e.Code, e.Message, msg)
	}
	if len(e.Details) != 1 || e.Details[0].TypeURL != "type.googleapis.com/google.rpc.ErrorInfo" {
		t.Fatalf("details %+v, want one ErrorInfo", e.Details)
	}
	var info errdetails.ErrorInfo
	if err := proto.Unmarshal(e.Details[0].Value, &info); err != nil || info.GetDomain() != contract.ErrorDomain || info.GetReason() != "Full" {
		t.Fatalf("ErrorInfo %v (%v)", &info, err)
	}
}

func TestUnknownMethodIsUnimplemented(t *testing.T) {
	c := start(t, &server{})
	err := c.Invoke(ctx(t), "/cns.v1.IPAMService/NoSuchMethod", &cnsv1.StatusRequest{}, new(cnsv1.StatusResponse))
	var e *unary.Error
	if !errors.As(err, &e) || e.Code != unary.Unimplemented {
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
	if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &e) && e.Code == unary.DeadlineExceeded) {
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
	c := dial(filepath.Join(t.TempDir(), "none.sock"))
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
	c := dial(sock)
	defer c.Close()
	err = c.Invoke(ctx(t), cnsv1grpc.IPAMService_Status_FullMethodName, &cnsv1.StatusRequest{}, new(cnsv1.StatusResponse))
	if !errors.Is(err, unary.ErrTransport) {
		t.Fatalf("got %v, want a transport error", err)
	}
}

// raw serves h over HTTP/2 without TLS on a unix socket: answers grpc-go would never give.
func raw(t *testing.T, h http.HandlerFunc) conn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "r.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &p}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	c := dial(sock)
	t.Cleanup(func() { c.Close() })
	return c
}

func frame(flag byte, m []byte) []byte {
	b := make([]byte, 5, 5+len(m))
	b[0] = flag
	binary.BigEndian.PutUint32(b[1:], uint32(len(m)))
	return append(b, m...)
}

// answer writes an HTTP status, headers, a body and trailers.
func answer(status int, header map[string]string, body []byte, trailer map[string]string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		for k := range trailer {
			w.Header().Add("Trailer", k)
		}
		w.WriteHeader(status)
		_, _ = w.Write(body)
		for k, v := range trailer {
			w.Header().Set(k, v)
		}
	}
}

func TestMalformedAnswersAreErrorsWithTheRightCode(t *testing.T) {
	grpcCT := map[string]string{"Content-Type": "application/grpc"}
	ok := map[string]string{"Grpc-Status": "0"}
	for _, c := range []struct {
		name string
		h    http.HandlerFunc
		want unary.Code
	}{
		{"OK and no message", answer(200, grpcCT, nil, ok), unary.Internal},
		{"two messages", answer(200, grpcCT, append(frame(0, nil), frame(0, nil)...), ok), unary.Internal},
		{"compressed message", answer(200, grpcCT, frame(1, nil), ok), unary.Internal},
		{"over the size bound", answer(200, grpcCT, frame(0, make([]byte, unary.MaxResponse+10)), ok), unary.Internal},
		{"no trailers", answer(200, grpcCT, frame(0, nil), nil), unary.Internal},
		{"trailers without grpc-status", answer(200, grpcCT, frame(0, nil), map[string]string{"Grpc-Message": "x"}), unary.Unknown},
		{"not a gRPC content type", answer(200, map[string]string{"Content-Type": "application/grpcweb", "Grpc-Status": "0"}, nil, nil), unary.Unknown},
		{"HTTP 503, not gRPC", answer(503, map[string]string{"Content-Type": "text/plain"}, []byte("busy"), nil), unary.Unavailable},
		{"HTTP 404, not gRPC", answer(404, nil, nil, nil), unary.Unimplemented},
		{"HTTP 503 with a gRPC status", answer(503, map[string]string{"Content-Type": "application/grpc", "Grpc-Status": "5"}, nil, nil), unary.NotFound},
	} {
		err := raw(t, c.h).Invoke(ctx(t), "/cns.v1.IPAMService/Status", &cnsv1.StatusRequest{}, new(cnsv1.StatusResponse))
		var e *unary.Error
		if !errors.As(err, &e) || e.Code != c.want {
			t.Errorf("%s: got %v, want code %v", c.name, err, c.want)
		}
		if c.name == "over the size bound" && e != nil && !strings.Contains(e.Message, "over the") {
			t.Errorf("%s: message %q does not name the bound", c.name, e.Message)
		}
	}
	// A gRPC content type with a codec suffix is gRPC.
	m, _ := proto.Marshal(&cnsv1.StatusResponse{Ready: true})
	var got cnsv1.StatusResponse
	if err := raw(t, answer(200, map[string]string{"Content-Type": "application/grpc+proto"}, frame(0, m), ok)).Invoke(ctx(t), "/x/y", &cnsv1.StatusRequest{}, &got); err != nil || !got.GetReady() {
		t.Errorf("application/grpc+proto: %v, ready %v", err, got.GetReady())
	}
}

// Details are read whether the base64 is padded or not (grpc-go sends it unpadded), and a
// malformed escape in grpc-message does not undo the valid ones.
func TestDetailsAndMessageAreReadLeniently(t *testing.T) {
	a, err := anypb.New(&errdetails.ErrorInfo{Domain: contract.ErrorDomain})
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(&rpcstatus.Status{Code: 14, Message: "x", Details: []*anypb.Any{a}})
	if err != nil {
		t.Fatal(err)
	}
	for _, enc := range []string{base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b)} {
		h := map[string]string{"Content-Type": "application/grpc", "Grpc-Status": "14", "Grpc-Message": "a%20b%zz%", "Grpc-Status-Details-Bin": enc}
		err := raw(t, answer(200, h, nil, nil)).Invoke(ctx(t), "/x/y", &cnsv1.StatusRequest{}, new(cnsv1.StatusResponse))
		var e *unary.Error
		if !errors.As(err, &e) || e.Code != unary.Unavailable || e.Message != "a b%zz%" || len(e.Details) != 1 || e.Details[0].TypeURL != a.GetTypeUrl() {
			t.Errorf("details %q: got %+v", enc, err)
		}
	}
}

// Close leaves no connection behind, also after error answers sent in headers alone, which
// the transport may not yet count as done when Close runs: each such connection kept
// goroutines on both ends until the server stopped.
func TestCloseLeavesNoConnectionBehind(t *testing.T) {
	sock := serve(t, &server{})
	base := runtime.NumGoroutine()
	for range 30 {
		c := dial(sock)
		err := c.Invoke(ctx(t), "/cns.v1.IPAMService/NoSuchMethod", &cnsv1.StatusRequest{}, new(cnsv1.StatusResponse))
		if err == nil {
			t.Fatal("an unknown method answered OK")
		}
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for n := runtime.NumGoroutine(); n > base+2; n = runtime.NumGoroutine() {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after 30 closed calls, %d before: connections were left open", n, base)
		}
		time.Sleep(10 * time.Millisecond) // polling the count; there is no event to wait on
	}
}

// conn is a unary.Conn that encodes and decodes the generated messages for the tests.
type conn struct{ *unary.Conn }

func dial(path string) conn { return conn{unary.Dial(path)} }

func (c conn) Invoke(ctx context.Context, method string, in, out proto.Message) error {
	req, err := proto.Marshal(in)
	if err != nil {
		return err
	}
	b, err := c.Conn.Invoke(ctx, method, req)
	if err != nil {
		return err
	}
	return proto.Unmarshal(b, out)
}

func TestCodesAreGRPCs(t *testing.T) {
	for c := range uint32(20) {
		if got, want := unary.Code(c).String(), codes.Code(c).String(); got != want {
			t.Errorf("code %d is %q here, %q in grpc-go", c, got, want)
		}
	}
	for ours, theirs := range map[unary.Code]codes.Code{unary.OK: codes.OK, unary.Canceled: codes.Canceled, unary.Unknown: codes.Unknown,
		unary.InvalidArgument: codes.InvalidArgument, unary.DeadlineExceeded: codes.DeadlineExceeded, unary.NotFound: codes.NotFound,
		unary.AlreadyExists: codes.AlreadyExists, unary.PermissionDenied: codes.PermissionDenied,
		unary.ResourceExhausted: codes.ResourceExhausted, unary.FailedPrecondition: codes.FailedPrecondition,
		unary.Aborted: codes.Aborted, unary.OutOfRange: codes.OutOfRange, unary.Unimplemented: codes.Unimplemented,
		unary.Internal: codes.Internal, unary.Unavailable: codes.Unavailable, unary.DataLoss: codes.DataLoss,
		unary.Unauthenticated: codes.Unauthenticated} {
		if uint32(ours) != uint32(theirs) {
			t.Errorf("%s is %d here, %d in grpc-go", ours, ours, theirs)
		}
	}
}
