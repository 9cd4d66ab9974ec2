// Command nullcns answers cns's RequestIPs and ReleaseIPs with no pool, no store and no
// metrics, on the unix socket named by its argument. make bench runs the gRPC pairs against
// it beside cns: what it serves is the floor of any cns answering those calls over grpc-go.
// With --log FILE it first makes each call durable as cns does, and nothing more: the call's
// bytes written to FILE over blocks it already has, one write and one fdatasync per group of
// calls (see durableLog): the floor of any cns that answers only once a call is on disk.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/vnet-cni/vnet-cni/cns/gctune"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
)

func main() {
	logPath := flag.String("log", "", "make each call durable in this file before answering it")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: nullcns [--log FILE] SOCKET")
		os.Exit(2)
	}
	if err := serve(flag.Arg(0), *logPath); err != nil {
		fmt.Fprintln(os.Stderr, "nullcns:", err)
		os.Exit(1)
	}
}

func serve(socket, logPath string) error {
	var lg *durableLog
	if logPath != "" {
		var err error
		if lg, err = openDurableLog(logPath); err != nil {
			return err
		}
	}
	lis, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	gctune.Start(context.Background(), os.LookupEnv, slog.Default()) // cns's collector policy, as cmd/cns
	s := grpc.NewServer(grpc.NumStreamWorkers(64))                   // as cns serves its unix socket (cns/run.go)
	cnsv1grpc.RegisterIPAMServiceServer(s, null{log: lg})
	return s.Serve(lis)
}

// answer is the message cns sends for an address of its subnet.
var answer = &cnsv1.IPConfig{Address: "10.240.0.9/16", Gateway: "10.240.0.1", SubnetPrefix: "10.240.0.0/16",
	Routes: []*cnsv1.Route{{Destination: "0.0.0.0/0"}}, Mtu: 1500}

type null struct {
	cnsv1grpc.UnimplementedIPAMServiceServer
	log *durableLog // nil: answer at once
}

func (n null) RequestIPs(_ context.Context, req *cnsv1.RequestIPsRequest) (*cnsv1.RequestIPsResponse, error) {
	if err := n.durable(req); err != nil {
		return nil, err
	}
	return &cnsv1.RequestIPsResponse{IpConfigs: []*cnsv1.IPConfig{answer}}, nil
}

func (n null) ReleaseIPs(_ context.Context, req *cnsv1.ReleaseIPsRequest) (*cnsv1.ReleaseIPsResponse, error) {
	if err := n.durable(req); err != nil {
		return nil, err
	}
	return &cnsv1.ReleaseIPsResponse{}, nil
}

// durable returns once the call is in the log (at once without one).
func (n null) durable(req proto.Message) error {
	if n.log == nil {
		return nil
	}
	b, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	return n.log.commit(b)
}
