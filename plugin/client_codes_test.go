package plugin

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vnet-cni/vnet-cni/plugin/cnswire"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
	"github.com/vnet-cni/vnet-cni/proto/cns/v1/contract"
)

type answeringCNS struct {
	cnsv1grpc.UnimplementedIPAMServiceServer
	answer func(context.Context) error
}

func (s *answeringCNS) RequestIPs(ctx context.Context, _ *cnsv1.RequestIPsRequest) (*cnsv1.RequestIPsResponse, error) {
	return nil, s.answer(ctx)
}

// cnsStatus is an error as cns answers it: with its ErrorInfo.
func cnsStatus(t *testing.T, c codes.Code) error {
	s, err := status.New(c, "x").WithDetails(&errdetails.ErrorInfo{Domain: contract.ErrorDomain, Reason: c.String()})
	if err != nil {
		t.Fatal(err)
	}
	return s.Err()
}

// What kubelet is told for each way a RequestIPs can end, through the real client and a real
// grpc-go server: the same CNI codes the plugin gave when it used grpc-go's client.
func TestCNSOutcomesMapToCNICodes(t *testing.T) {
	for _, c := range []struct {
		name   string
		answer func(ctx context.Context, g *grpc.Server, clientDone <-chan struct{}) error
		want   uint
	}{
		{"cns Unavailable (waiting on the cloud)", func(context.Context, *grpc.Server, <-chan struct{}) error { return cnsStatus(t, codes.Unavailable) }, types.ErrTryAgainLater},
		{"Unavailable cns did not send", func(context.Context, *grpc.Server, <-chan struct{}) error {
			return status.Error(codes.Unavailable, "x")
		}, types.ErrPluginNotAvailable},
		{"node out of addresses", func(context.Context, *grpc.Server, <-chan struct{}) error {
			return cnsStatus(t, codes.ResourceExhausted)
		}, types.ErrPluginNotAvailable},
		{"a limit of the transport, not the pool", func(context.Context, *grpc.Server, <-chan struct{}) error {
			return status.Error(codes.ResourceExhausted, "message larger than max")
		}, types.ErrInternal},
		{"key refused", func(context.Context, *grpc.Server, <-chan struct{}) error { return cnsStatus(t, codes.InvalidArgument) }, types.ErrInvalidEnvironmentVariables},
		{"cns's wait bound passed", func(context.Context, *grpc.Server, <-chan struct{}) error {
			return cnsStatus(t, codes.DeadlineExceeded)
		}, types.ErrTryAgainLater},
		{"no answer within the deadline", func(_ context.Context, _ *grpc.Server, clientDone <-chan struct{}) error { <-clientDone; return nil }, types.ErrTryAgainLater},
		{"cns gone mid-call", func(ctx context.Context, g *grpc.Server, _ <-chan struct{}) error {
			go g.Stop()
			<-ctx.Done()
			return ctx.Err()
		}, types.ErrPluginNotAvailable},
	} {
		t.Run(c.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "cns.sock")
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			g := grpc.NewServer()
			defer g.Stop()
			clientDone := make(chan struct{})
			cnsv1grpc.RegisterIPAMServiceServer(g, &answeringCNS{answer: func(ctx context.Context) error { return c.answer(ctx, g, clientDone) }})
			go func() { _ = g.Serve(l) }()
			client, err := DialCNS(&Config{CNSSocket: sock})
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			_, err = client.RequestIPs(ctx, cnswire.IPRequest{ContainerID: "c", IfName: "eth0"})
			close(clientDone)
			if got := toCNIError(err); got == nil || got.Code != c.want {
				t.Fatalf("CNI error %+v for %v, want code %d", got, err, c.want)
			}
		})
	}
}

// Something listens on the socket but does not speak HTTP/2 (here HTTP/1.1): that is no
// answer from cns, and no cns missing either. It is not told as "is cns running?" (CNI 50).
func TestASocketThatSpeaksAnotherProtocolIsNotAnUnreachableCNS(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "cns.sock")
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
		defer conn.Close()
		_, _ = conn.Write([]byte("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"))
		_, _ = io.Copy(io.Discard, conn)
	}()
	client, err := DialCNS(&Config{CNSSocket: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = client.RequestIPs(ctx, cnswire.IPRequest{ContainerID: "c", IfName: "eth0"})
	if got := toCNIError(err); got == nil || got.Code != types.ErrInternal {
		t.Fatalf("CNI error %+v for %v, want code %d", got, err, types.ErrInternal)
	}
}
