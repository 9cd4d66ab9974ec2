package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/vnet-cni/vnet-cni/plugin/cnswire"
	"github.com/vnet-cni/vnet-cni/plugin/unary"
	"github.com/vnet-cni/vnet-cni/proto/cns/v1/contract"
)

// CNS is what the plugin needs from cns. Implemented by cnsClient; tests may substitute.
type CNS interface {
	RequestIPs(ctx context.Context, req cnswire.IPRequest) (cnswire.Grant, error)
	ReleaseIPs(ctx context.Context, network, containerID, ifname string) error
	GarbageCollect(ctx context.Context, network string, valid []cnswire.Attachment) error
	Status(ctx context.Context) (cnswire.Status, error)
	ListAllocations(ctx context.Context) (cnswire.Allocations, error)
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
// net/http) and encodes the messages with cnswire (which links neither protobuf's runtime nor
// its registry): the plugin starts once per pod, and their package initialisation was the
// largest part of that start.
type cnsClient struct{ conn *unary.Conn }

var _ CNS = (*cnsClient)(nil)

// A request and an answer message of cnswire.
type (
	request interface{ Marshal() ([]byte, error) }
	answer  interface{ Unmarshal(b []byte) error }
)

// noFields is the request of Status and ListAllocations: a message without fields.
type noFields struct{}

func (noFields) Marshal() ([]byte, error) { return []byte{}, nil }

// call invokes method with in and decodes the answer into out. It marks failures to reach
// cns (no answer, or an Unavailable that cns did not send) as unreachable, so they map to
// CNI 50; answers from cns keep their status. An answer that does not decode is Internal,
// as in grpc-go.
func (c *cnsClient) call(ctx context.Context, method string, in request, out answer) error {
	op := method[strings.LastIndexByte(method, '/')+1:]
	req, err := in.Marshal()
	if err != nil {
		return fmt.Errorf("cns %s: encode request: %w", op, err)
	}
	b, err := c.conn.Invoke(ctx, method, req)
	if err == nil {
		if derr := out.Unmarshal(b); derr != nil {
			// A status, as grpc-go makes one: its text keeps the decoder's error.
			err = &unary.Error{Code: unary.Internal, Message: fmt.Sprintf("decode %s answer: %v", op, derr)}
		}
	}
	if err == nil {
		return nil
	}
	var se *unary.Error
	if errors.Is(err, unary.ErrTransport) || errors.As(err, &se) && se.Code == unary.Unavailable && !isCNSAnswer(se) {
		return fmt.Errorf("%w: %s: %w", errUnreachable, op, err)
	}
	return fmt.Errorf("cns %s: %w", op, err)
}

// isCNSAnswer tells a status cns sent (it carries cns's google.rpc.ErrorInfo) from one a
// proxy or the server's transport made up.
func isCNSAnswer(e *unary.Error) bool {
	for _, d := range e.Details {
		if d.TypeURL == errorInfoURL && errorInfoDomain(d.Value) == contract.ErrorDomain {
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

func (c *cnsClient) RequestIPs(ctx context.Context, req cnswire.IPRequest) (cnswire.Grant, error) {
	var g cnswire.Grant
	err := c.call(ctx, methodRequestIPs, req, &g)
	return g, err
}

func (c *cnsClient) ReleaseIPs(ctx context.Context, network, containerID, ifname string) error {
	return c.call(ctx, methodReleaseIPs, cnswire.ReleaseRequest{ContainerID: containerID, IfName: ifname, Network: network}, new(cnswire.ReleaseResponse))
}

// GarbageCollect asks cns to release the network's allocations not in valid. Its counts are
// cns's to log; the answer is still decoded, so a malformed one fails the call.
func (c *cnsClient) GarbageCollect(ctx context.Context, network string, valid []cnswire.Attachment) error {
	return c.call(ctx, methodGarbageCollect, cnswire.GCRequest{Valid: valid, Network: network}, new(cnswire.GCResult))
}

func (c *cnsClient) Status(ctx context.Context) (cnswire.Status, error) {
	var st cnswire.Status
	err := c.call(ctx, methodStatus, noFields{}, &st)
	return st, err
}

func (c *cnsClient) ListAllocations(ctx context.Context) (cnswire.Allocations, error) {
	var as cnswire.Allocations
	err := c.call(ctx, methodListAllocations, noFields{}, &as)
	return as, err
}

func (c *cnsClient) Close() error { return c.conn.Close() }
