// Command nullcns answers cns's RequestIPs and ReleaseIPs with no pool, no store, no disk and
// no metrics, on the unix socket named by its argument. make bench runs the gRPC pairs against
// it beside cns: what it serves is the floor of any cns answering those calls over grpc-go.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"

	"google.golang.org/grpc"

	"github.com/vnet-cni/vnet-cni/cns/gctune"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: nullcns SOCKET")
		os.Exit(2)
	}
	lis, err := net.Listen("unix", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "nullcns:", err)
		os.Exit(1)
	}
	gctune.Start(context.Background(), os.LookupEnv, slog.Default()) // cns's collector policy, as cmd/cns
	s := grpc.NewServer(grpc.NumStreamWorkers(64))                   // as cns serves its unix socket (cns/run.go)
	cnsv1grpc.RegisterIPAMServiceServer(s, null{})
	_ = s.Serve(lis)
}

// answer is the message cns sends for an address of its subnet.
var answer = &cnsv1.IPConfig{Address: "10.240.0.9/16", Gateway: "10.240.0.1", SubnetPrefix: "10.240.0.0/16",
	Routes: []*cnsv1.Route{{Destination: "0.0.0.0/0"}}, Mtu: 1500}

type null struct {
	cnsv1grpc.UnimplementedIPAMServiceServer
}

func (null) RequestIPs(context.Context, *cnsv1.RequestIPsRequest) (*cnsv1.RequestIPsResponse, error) {
	return &cnsv1.RequestIPsResponse{IpConfigs: []*cnsv1.IPConfig{answer}}, nil
}

func (null) ReleaseIPs(context.Context, *cnsv1.ReleaseIPsRequest) (*cnsv1.ReleaseIPsResponse, error) {
	return &cnsv1.ReleaseIPsResponse{}, nil
}
