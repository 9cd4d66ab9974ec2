// Package cloud holds the vocabulary cns shares with its cloud backends: the node NIC as the
// pool sees it, a change to its secondary ip configurations, and classified cloud errors.
// The interface itself is declared by its consumer (package cns).
package cloud

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"time"
)

// NIC is the node's network interface as far as the pool cares.
type NIC struct {
	ID      string       // ARM resource ID
	ETag    string       // for If-Match on the next write
	Primary netip.Addr   // the node's own address; never in the pool
	Subnet  netip.Prefix // subnet of the primary ip configuration
	// Secondaries are the addresses of cns's own ip configurations (OwnConfigName), sorted.
	// Only these are ever adopted, assigned or removed.
	Secondaries []netip.Addr
	// Names are the ip configuration names of Secondaries, when the backend reports them.
	Names map[netip.Addr]string
	// Foreign are every other non-primary ip configuration (an operator's, a load
	// balancer's, IPv6 ones): they take room on the NIC but cns never touches them.
	Foreign           []ForeignConfig
	ProvisioningState string
	// Snapshot is the backend's own copy of what it read or wrote, opaque to everyone else.
	// A Change decided on this view carries it back, so the write builds on it instead of
	// reading the NIC again; If-Match on ETag still refuses the write if the NIC has changed.
	Snapshot any
}

// ForeignConfig is an ip configuration cns did not create.
type ForeignConfig struct {
	Name string
	Addr netip.Addr // zero when it has no address (yet)
}

// Provisioning states of an ARM resource that the pool tells apart.
const (
	ProvisioningSucceeded = "Succeeded"
	ProvisioningUpdating  = "Updating"
	ProvisioningFailed    = "Failed"
)

// Settled reports whether the NIC's last operation has ended (Succeeded or Failed): its
// view will not change under the reader's feet. An empty state is taken as settled, for
// backends that have no notion of it.
func (n NIC) Settled() bool {
	return n.ProvisioningState == "" || n.ProvisioningState == ProvisioningSucceeded || n.ProvisioningState == ProvisioningFailed
}

// Succeeded reports whether the NIC's last operation succeeded, so every ip configuration
// it lists is in effect and may be served.
func (n NIC) Succeeded() bool {
	return n.ProvisioningState == "" || n.ProvisioningState == ProvisioningSucceeded
}

// OwnConfigPrefix starts the name of every ip configuration cns creates: "cns-" and 12
// lowercase hex digits (cns has named its configurations so since its first release, so
// pools created by older cns are recognised as they are).
const OwnConfigPrefix = "cns-"

var ownName = regexp.MustCompile(`^cns-[0-9a-f]{12}$`)

// OwnConfigName reports whether an ip configuration name is one cns gives. Anything else
// (an operator's "web", a name that merely starts with "cns") is foreign.
func OwnConfigName(name string) bool { return ownName.MatchString(name) }

// Change is one write of the NIC's ip configurations.
type Change struct {
	ETag     string       // the NIC version the change was decided on; a mismatch is KindConflict
	Snapshot any          // that version's NIC.Snapshot, if the caller kept it; else the write reads the NIC first
	Add      int          // new dynamic ip configurations in the primary's subnet
	Remove   []netip.Addr // secondary addresses to remove
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
