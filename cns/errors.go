package cns

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vnet-cni/vnet-cni/cns/cloud"
	"github.com/vnet-cni/vnet-cni/proto/cns/v1/contract"
)

// Domain errors. Handlers wrap them with %w and a message that says what happened and what
// to do; toStatus is the one place they become gRPC codes.
var (
	// ErrInvalid is a malformed request.
	ErrInvalid = errors.New("invalid request")
	// ErrExhausted means no address can be had: --max-ips, Azure's limit of the NIC or the
	// subnet is full. A cloud.Error of KindNICFull or KindSubnetFull maps the same way.
	ErrExhausted = errors.New("address pool exhausted")
	// ErrCloudUnavailable means the pool is empty and the cloud API is failing.
	ErrCloudUnavailable = errors.New("cloud API unavailable")
	// ErrWaitTimeout means no address arrived within the wait bound.
	ErrWaitTimeout = errors.New("timed out waiting for an address")
	// ErrStore means the durable store failed; nothing was changed.
	ErrStore = errors.New("state store failure")
	// ErrConflict means the key is held by another attachment (network or netns).
	ErrConflict = errors.New("key held by another attachment")
	// ErrShuttingDown means the daemon is stopping.
	ErrShuttingDown = errors.New("cns is shutting down")
)

func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	var ce *cloud.Error
	switch {
	case errors.Is(err, ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, ErrConflict):
		code = codes.AlreadyExists
	case errors.Is(err, ErrExhausted),
		errors.As(err, &ce) && (ce.Kind == cloud.KindNICFull || ce.Kind == cloud.KindSubnetFull):
		code = codes.ResourceExhausted
	case errors.Is(err, ErrCloudUnavailable), errors.Is(err, ErrShuttingDown):
		code = codes.Unavailable
	case errors.Is(err, ErrWaitTimeout), errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, ErrStore):
		code = codes.Internal
	}
	st, derr := status.New(code, err.Error()).WithDetails(&errdetails.ErrorInfo{Domain: contract.ErrorDomain, Reason: code.String()})
	if derr != nil {
		return status.Error(code, err.Error())
	}
	return st.Err()
}
