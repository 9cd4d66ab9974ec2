package ipampool

import (
	"errors"
	"fmt"
	"time"
)

// Limits are the pool's knobs.
type Limits struct {
	BatchSize    int           // growth unit
	MinFree      int           // low watermark of free (Available + Pending) addresses
	MaxFree      int           // high watermark; above it idle addresses are released
	MaxIPs       int           // most secondary addresses on the NIC
	Cooldown     time.Duration // rest of a released address before reuse
	ReleaseDelay time.Duration // idleness an address needs before it may be released
}

// DefaultLimits are the defaults of the anchors (Azure CNS): batch 16, min free 8, max free
// 24, 250 per NIC (Azure allows 256 ip configurations, the primary included), cooldown 30 s,
// release delay 60 s.
func DefaultLimits() Limits {
	return Limits{BatchSize: 16, MinFree: 8, MaxFree: 24, MaxIPs: 250, Cooldown: 30 * time.Second, ReleaseDelay: 60 * time.Second}
}

// NICHardLimit is Azure's limit of ip configurations on one NIC.
const NICHardLimit = 256

// Validate reports the first knob out of range.
func (l Limits) Validate() error {
	var errs []error
	if l.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("batch size %d: must be at least 1", l.BatchSize))
	}
	if l.MinFree < 0 {
		errs = append(errs, fmt.Errorf("min free %d: must not be negative", l.MinFree))
	}
	if l.MaxFree < l.MinFree {
		errs = append(errs, fmt.Errorf("max free %d: must be at least min free %d", l.MaxFree, l.MinFree))
	}
	if l.MaxIPs < 1 || l.MaxIPs > NICHardLimit-1 {
		errs = append(errs, fmt.Errorf("max IPs %d: must be between 1 and %d (one ip configuration is the primary)", l.MaxIPs, NICHardLimit-1))
	}
	if l.Cooldown < 0 || l.ReleaseDelay < 0 {
		errs = append(errs, errors.New("cooldown and release delay must not be negative"))
	}
	return errors.Join(errs...)
}

// Input is everything Decide looks at. A new input is a new field whose zero value keeps
// the behaviour without it.
type Input struct {
	Counts Counts
	// Waiters are requests blocked on an empty pool.
	Waiters int
	// Foreign is how many ip configurations on the NIC are not cns's (an operator's, IPv6
	// ones) and not already in Counts: they take room under MaxIPs but are never touched.
	Foreign int
	// KeepReleases forbids cancelling queued releases: the caller cannot vouch that they
	// are still on the NIC (its view of the NIC is not a settled success).
	KeepReleases bool
	Limits       Limits
}

// Decision is what the pool should do next. Add and the releases left queued travel in one
// NIC write, so growth never waits behind a removal.
type Decision struct {
	// Add is how many ip configurations to add.
	Add int
	// Release is how many idle Available addresses to mark for removal at most.
	Release int
	// Cancel is how many queued releases (PendingRelease, not yet written) to return to
	// Available instead of removing: the pool needs them.
	Cancel int
	// AtLimit is set when the pool needs addresses but the NIC limit leaves no room.
	AtLimit bool
}

// Decide returns the next action for the pool described by in, when no cloud write is in
// flight.
//
// Growth is demand-aware: one write asks for every waiter plus the warm buffer (min free),
// rounded up to the batch size and capped by MaxIPs (foreign configurations included),
// rather than one batch per round trip. Queued releases are cancelled first: an address
// still on the NIC serves a waiter at no cost. Shrinking happens only with no waiters, down
// to the high watermark; it never both releases and adds.
func Decide(in Input) Decision {
	c, l := in.Counts, in.Limits
	free := c.Available + c.Pending
	need := in.Waiters + l.MinFree - free
	if need > 0 {
		var d Decision
		if !in.KeepReleases {
			d.Cancel = min(need, c.PendingRelease)
			need -= d.Cancel
		}
		if need <= 0 {
			return d
		}
		// The releases left queued leave the NIC in the same write as the additions.
		held := c.Total() - (c.PendingRelease - d.Cancel) + in.Foreign
		d.Add = min(roundUp(need, l.BatchSize), max(l.MaxIPs-held, 0))
		d.AtLimit = d.Add < need
		return d
	}
	if in.Waiters == 0 && free > l.MaxFree {
		return Decision{Release: free - l.MaxFree}
	}
	return Decision{}
}

func roundUp(n, unit int) int {
	return (n + unit - 1) / unit * unit
}
