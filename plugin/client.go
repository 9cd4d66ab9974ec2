package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/vnet-cni/vnet-cni/plugin/unary"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
)

// CNS is what the plugin needs from cns. Implemented by cnsClient; tests may substitute.
type CNS interface {
	RequestIPs(ctx context.Context, req *cnsv1.RequestIPsRequest) (*cnsv1.RequestIPsResponse, error)
	ReleaseIPs(ctx context.Context, network, containerID, ifname string) error
	GarbageCollect(ctx context.Context, network string, valid []*cnsv1.Attachment) (*cnsv1.GarbageCollectResponse, error)
	Status(ctx context.Context) (*cnsv1.StatusResponse, error)
	ListAllocations(ctx context.Context) ([]*cnsv1.Allocation, error)
	Close() error
}

// Dialer opens a CNS client for a configuration.
type Dialer func(c *Config) (CNS, error)

// Full names of the cns methods the plugin calls. They are written out rather than taken from
// cnsv1grpc, whose import would link grpc-go (TestMethodNamesAreTheServices holds them equal).
const (
	methodRequestIPs      = "/cns.v1.IPAMService/RequestIPs"
	methodReleaseIPs      = "/cns.v1.IPAMService/ReleaseIPs"
	methodGarbageCollect  = "/cns.v1.IPAMService/GarbageCollect"
	methodStatus          = "/cns.v1.IPAMService/Status"
	methodListAllocations = "/cns.v1.PoolService/ListAllocations"
)

// DialCNS returns a client of cns's unix socket; it connects on the first call. A missing
// socket is reported at once as unreachable rather than after the request timeout.
func DialCNS(c *Config) (CNS, error) {
	if _, err := os.Stat(c.CNSSocket); err != nil {
		return nil, fmt.Errorf("%w: socket %s: %w", errUnreachable, c.CNSSocket, err)
	}
	return &cnsClient{conn: unary.Dial(c.CNSSocket)}, nil
}

// cnsClient calls cns with unary gRPC (package unary, which links neither grpc-go nor
// net/http): the plugin starts once per pod, and their package initialisation was the
// largest part of that start.
type cnsClient struct{ conn *unary.Conn }

var _ CNS = (*cnsClient)(nil)

// call invokes method and marks failures to reach cns (no answer, or an Unavailable that cns
// did not send) as unreachable, so they map to CNI 50; answers from cns keep their status.
func (c *cnsClient) call(ctx context.Context, method string, in, out proto.Message) error {
	err := c.conn.Invoke(ctx, method, in, out)
	if err == nil {
		return nil
	}
	op := method[strings.LastIndexByte(method, '/')+1:]
	var se *unary.Error
	if errors.Is(err, unary.ErrTransport) || errors.As(err, &se) && se.Code == codes.Unavailable && !isCNSAnswer(se) {
		return fmt.Errorf("%w: %s: %w", errUnreachable, op, err)
	}
	return fmt.Errorf("cns %s: %w", op, err)
}

// isCNSAnswer tells a status cns sent (it carries cns's google.rpc.ErrorInfo) from one a
// proxy or the server's transport made up.
func isCNSAnswer(e *unary.Error) bool {
	for _, d := range e.Details {
		if d.TypeURL == errorInfoURL && errorInfoDomain(d.Value) == cnsv1.ErrorDomain {
			return true
		}
	}
	return false
}

const errorInfoURL = "type.googleapis.com/google.rpc.ErrorInfo"

// errorInfoDomain returns field 2 (domain) of an encoded google.rpc.ErrorInfo.
func errorInfoDomain(b []byte) string {
	if v := unary.Fields(b, 2); len(v) > 0 {
		return string(v[len(v)-1])
	}
	return ""
}

func (c *cnsClient) RequestIPs(ctx context.Context, req *cnsv1.RequestIPsRequest) (*cnsv1.RequestIPsResponse, error) {
	r := new(cnsv1.RequestIPsResponse)
	if err := c.call(ctx, methodRequestIPs, req, r); err != nil {
		return nil, err
	}
	return r, nil
}

func (c *cnsClient) ReleaseIPs(ctx context.Context, network, containerID, ifname string) error {
	return c.call(ctx, methodReleaseIPs, &cnsv1.ReleaseIPsRequest{ContainerId: containerID, Ifname: ifname, Network: network}, new(cnsv1.ReleaseIPsResponse))
}

func (c *cnsClient) GarbageCollect(ctx context.Context, network string, valid []*cnsv1.Attachment) (*cnsv1.GarbageCollectResponse, error) {
	r := new(cnsv1.GarbageCollectResponse)
	if err := c.call(ctx, methodGarbageCollect, &cnsv1.GarbageCollectRequest{ValidAttachments: valid, Network: network}, r); err != nil {
		return nil, err
	}
	return r, nil
}

func (c *cnsClient) Status(ctx context.Context) (*cnsv1.StatusResponse, error) {
	r := new(cnsv1.StatusResponse)
	if err := c.call(ctx, methodStatus, &cnsv1.StatusRequest{}, r); err != nil {
		return nil, err
	}
	return r, nil
}

func (c *cnsClient) ListAllocations(ctx context.Context) ([]*cnsv1.Allocation, error) {
	r := new(cnsv1.ListAllocationsResponse)
	if err := c.call(ctx, methodListAllocations, &cnsv1.ListAllocationsRequest{}, r); err != nil {
		return nil, err
	}
	return r.GetAllocations(), nil
}

func (c *cnsClient) Close() error { return c.conn.Close() }
