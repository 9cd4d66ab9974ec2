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

// Decision is what the pool should do next: at most one of Add and Release is non-zero, so
// one decision is one NIC write.
type Decision struct {
	// Add is how many ip configurations to add.
	Add int
	// Release is how many idle Available addresses to remove at most.
	Release int
	// AtLimit is set when the pool needs addresses but the NIC limit leaves no room.
	AtLimit bool
}

// Decide returns the next action for a pool with counts c and waiters requests blocked on an
// empty pool, when no cloud write is in flight. With the API server watched, waiters is the
// demand: the larger of the blocked requests and the pods bound to the node without an
// address, so the pool grows for pods before their requests arrive.
//
// Growth is demand-aware: one write asks for every waiter plus the warm buffer (min free),
// rounded up to the batch size and capped by MaxIPs, rather than one batch per round trip.
// Shrinking happens only with no waiters, down to the high watermark.
func Decide(c Counts, waiters int, l Limits) Decision {
	free := c.Available + c.Pending
	need := waiters + l.MinFree - free
	if need > 0 {
		add := roundUp(need, l.BatchSize)
		room := l.MaxIPs - c.Total()
		if add > room {
			add = max(room, 0)
		}
		return Decision{Add: add, AtLimit: add < need}
	}
	if waiters == 0 && free > l.MaxFree {
		return Decision{Release: free - l.MaxFree}
	}
	return Decision{}
}

func roundUp(n, unit int) int {
	return (n + unit - 1) / unit * unit
}
