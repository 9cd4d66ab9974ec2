package plugin

import (
	"context"
	"errors"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vnet-cni/vnet-cni/plugin/unary"
)

// Kinds of failure, wrapped with %w where they happen; toCNIError is the one place they
// become CNI error codes.
var (
	errConfig      = errors.New("invalid network configuration")
	errEnv         = errors.New("invalid environment")
	errUnreachable = errors.New("cns unreachable")
	errExists      = errors.New("interface already exists")
	errCheck       = errors.New("datapath check failed")
)

// toCNIError maps an error to the CNI code a runtime acts on:
//
//	7  invalid network configuration
//	4  invalid environment (CNI_NETNS not a namespace, interface exists, bad key)
//	11 try again later (cns waiting on the cloud, or the cloud failing)
//	50 plugin not available (cns unreachable; node out of addresses)
//	999 anything else
func toCNIError(err error) *types.Error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	msg := err.Error()
	var nsErr ns.NSPathNotNSErr
	var nsMissing ns.NSPathNotExistErr
	switch {
	case errors.Is(err, errConfig):
		return types.NewError(types.ErrInvalidNetworkConfig, msg, "")
	case errors.Is(err, errEnv), errors.Is(err, errExists), errors.As(err, &nsErr), errors.As(err, &nsMissing):
		return types.NewError(types.ErrInvalidEnvironmentVariables, msg, "")
	case errors.Is(err, errUnreachable):
		return types.NewError(types.ErrPluginNotAvailable, msg, "is cns running? check its socket and logs")
	}
	switch grpcCode(err) {
	case unary.ResourceExhausted:
		if !cnsAnswered(err) { // a transport limit (message size, flow control), not the pool
			return types.NewError(types.ErrInternal, msg, "")
		}
		return types.NewError(types.ErrPluginNotAvailable, msg, "this node cannot get another VNet address")
	case unary.Unavailable, unary.DeadlineExceeded:
		return types.NewError(types.ErrTryAgainLater, msg, "")
	case unary.InvalidArgument:
		return types.NewError(types.ErrInvalidEnvironmentVariables, msg, "")
	case unary.AlreadyExists:
		return types.NewError(types.ErrInvalidEnvironmentVariables, msg, "this container ID and ifname belong to another live attachment")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return types.NewError(types.ErrTryAgainLater, msg, "")
	}
	return types.NewError(types.ErrInternal, msg, "")
}

// cnsAnswered tells a status cns sent (with its ErrorInfo) from one its transport made.
func cnsAnswered(err error) bool {
	var se *unary.Error
	return errors.As(err, &se) && isCNSAnswer(se)
}

// grpcCode finds a gRPC status anywhere in err's chain.
func grpcCode(err error) unary.Code {
	var se *unary.Error
	if errors.As(err, &se) {
		return se.Code
	}
	return unary.OK
}
