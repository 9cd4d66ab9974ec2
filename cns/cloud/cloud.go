// Package cloud holds the vocabulary cns shares with its cloud backends: the node NIC as the
// pool sees it, a change to its secondary ip configurations, and classified cloud errors.
// The interface itself is declared by its consumer (package cns).
package cloud

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// NIC is the node's network interface as far as the pool cares.
type NIC struct {
	ID                string       // ARM resource ID
	ETag              string       // for If-Match on the next write
	Primary           netip.Addr   // the node's own address; never in the pool
	Subnet            netip.Prefix // subnet of the primary ip configuration
	Secondaries       []netip.Addr // every other IPv4 ip configuration's address, sorted
	ProvisioningState string
}

// Change is one write of the NIC's ip configurations.
type Change struct {
	ETag   string       // the NIC version the change was decided on; a mismatch is ErrConflict
	Add    int          // new dynamic ip configurations in the primary's subnet
	Remove []netip.Addr // secondary addresses to remove
}

// Kind classifies a cloud failure by what the caller should do about it.
type Kind int

// Kinds of cloud failure.
const (
	KindUnavailable Kind = iota // network error, timeout or 5xx: retry with backoff
	KindThrottled               // 429: wait RetryAfter
	KindConflict                // 412 or stale etag: re-read, decide again
	KindBusy                    // 409: another operation on the NIC is in progress
	KindSubnetFull              // the subnet has no free address
	KindNICFull                 // the NIC holds the most ip configurations it can
	KindFailed                  // the long-running operation ended Failed
	KindRejected                // 4xx the caller cannot fix by retrying (auth, bad request)
)

func (k Kind) String() string {
	return [...]string{"unavailable", "throttled", "conflict", "busy", "subnet_full", "nic_full", "failed", "rejected"}[k]
}

// Error is a classified cloud failure.
type Error struct {
	Kind       Kind
	Code       string        // the ARM error code, if any
	Status     int           // the HTTP status, if any
	RetryAfter time.Duration // server's wish, if any
	Err        error
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("cloud %s", e.Kind)
	if e.Code != "" {
		msg += " (" + e.Code + ")"
	}
	if e.RetryAfter > 0 {
		msg += fmt.Sprintf(", retry after %s", e.RetryAfter)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of err; an unclassified error is KindUnavailable.
func KindOf(err error) Kind {
	var ce *Error
	if errors.As(err, &ce) {
		return ce.Kind
	}
	return KindUnavailable
}

// RetryAfterOf returns the server's Retry-After carried by err, or zero.
func RetryAfterOf(err error) time.Duration {
	var ce *Error
	if errors.As(err, &ce) {
		return ce.RetryAfter
	}
	return 0
}
