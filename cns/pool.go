package cns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/vnet-cni/vnet-cni/cns/cloud"
	"github.com/vnet-cni/vnet-cni/cns/store"
	"github.com/vnet-cni/vnet-cni/ipampool"
)

// NICAPI is the cloud as the pool needs it. Implementations: cloud/azure (ARM or mockarm).
// Calls are made one at a time, from the manager's loop and at start.
type NICAPI interface {
	// GetNIC reads the NIC and its etag.
	GetNIC(ctx context.Context) (cloud.NIC, error)
	// UpdateIPConfigs writes the NIC's ip configurations with If-Match ch.ETag and waits
	// for the long-running operation, building on ch.Snapshot when it has one; errors are
	// *cloud.Error.
	UpdateIPConfigs(ctx context.Context, ch cloud.Change) (cloud.NIC, error)
}

// Store is the durable state as the pool needs it. Each call is durable when it returns.
type Store interface {
	Load() (store.State, error)
	PutAllocation(store.Allocation) error
	ReleaseAllocation(k ipampool.Key, addr netip.Addr, cooldownUntil time.Time) error
	MarkPendingRelease([]netip.Addr) error
	ForgetAddrs([]netip.Addr) error
}

// ManagerConfig are the pool's timing knobs besides ipampool.Limits.
type ManagerConfig struct {
	Limits            ipampool.Limits
	RequestWait       time.Duration // longest a RequestIPs waits for a scale-up
	CloudTimeout      time.Duration // deadline of one cloud call (a write includes its LRO)
	ReconcileInterval time.Duration // how often the NIC is re-read
	BackoffMin        time.Duration // first retry delay after a cloud failure
	BackoffMax        time.Duration // cap of the retry delay (Retry-After may exceed it)
	MTU               uint32        // VNet MTU reported to pods
	// DemandSettle and DemandHold bound how long a growth that only pods bound to the node
	// call for waits while their events are still arriving: until the events pause for
	// DemandSettle, at most DemandHold. Zero means the defaults (100 ms, 1 s).
	DemandSettle, DemandHold time.Duration
	ReleaseSpool             string // directory of releases the plugin could not deliver
	// LegacyNetwork is the CNI network that allocations recorded without one (state written
	// before networks were recorded, legacy veth labels, requests of older plugins) belong to:
	// the name of the single conflist cns served then. Empty means DefaultLegacyNetwork.
	LegacyNetwork string
}

// Manager owns the pool. Its exported methods are safe for concurrent use.
type Manager struct {
	cfg    ManagerConfig
	nic    NICAPI
	store  Store
	log    *slog.Logger
	events *broadcaster
	now    func() time.Time
	keys   keyLocks
	kick   chan struct{}

	mu          sync.Mutex
	pool        *ipampool.Pool
	nicState    cloud.NIC
	ready       chan struct{} // closed after the first NIC read
	changed     chan struct{} // closed and replaced when waiters should look again
	waiters     int
	inflight    *cloud.Change
	inflightAt  time.Time
	failures    int
	lastErr     error
	lastErrAt   time.Time
	nextAttempt time.Time
	subnetFull  bool
	nicFull     bool // a write of one address hit the NIC's limit
	addCap      int  // after SubnetIsFull or the NIC limit: the most one write may add (0: no cap)
	nicWrites   uint64
	reconcileAt time.Time
	stopping    bool
	pods        PodSource // nil without an API server (demand.go)
	demandSince time.Time // since when growth for bound pods alone has been held
	demandWake  time.Time // when a held growth is due

	// unsettled: a write may have changed the NIC without cns seeing how it ended (timeout,
	// 5xx, operation Failed), or the NIC was last read Updating. Nothing is decided until a
	// read shows the NIC settled.
	unsettled   bool
	settleTries int
	// unadopted counts cns's own configurations on a NIC whose last operation did not
	// succeed: not served, but expected to be once a write succeeds (they count as Pending).
	unadopted int
	// foreignConfigs counts the NIC's configurations cns did not create.
	foreignConfigs int
	// removeRejects counts, per address, writes carrying its removal that the cloud
	// rejected; splitRemovals sends the next addition without the queued removals.
	removeRejects map[netip.Addr]int
	splitRemovals bool
	// releaseHold: addresses whose removal was given up are not chosen again before then.
	releaseHold map[netip.Addr]time.Time
	// abandoned: removals given up, still PendingRelease until a settled read of the NIC
	// shows it holds them (then they are Available again).
	abandoned map[netip.Addr]bool
}

// NewManager builds a manager over an empty pool; call Restore, then Run.
func NewManager(cfg ManagerConfig, nic NICAPI, st Store, log *slog.Logger) (*Manager, error) {
	if err := cfg.Limits.Validate(); err != nil {
		return nil, fmt.Errorf("pool limits: %w", err)
	}
	return &Manager{cfg: cfg, nic: nic, store: st, log: log, events: newBroadcaster(), now: time.Now,
		kick: make(chan struct{}, 1), pool: ipampool.New(), ready: make(chan struct{}), changed: make(chan struct{}),
		removeRejects: map[netip.Addr]int{}, releaseHold: map[netip.Addr]time.Time{}, abandoned: map[netip.Addr]bool{}}, nil
}

// Restore loads the durable state into the pool: allocations, cooldowns and pending
// releases. Addresses the store does not know come from the NIC on the first reconcile.
func (m *Manager) Restore() error {
	st, err := m.store.Load()
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	st.Allocations = m.migrateNetworks(st.Allocations)
	for _, a := range st.Allocations {
		e := ipampool.Entry{Addr: a.Addr, State: ipampool.Assigned, Since: a.AssignedAt, Owner: a.Owner, AssignedAt: a.AssignedAt}
		if err := m.pool.Restore(e); err != nil {
			errs = append(errs, err)
		}
	}
	for _, a := range st.PendingReleases {
		if _, ok := m.pool.Get(a); !ok {
			_ = m.pool.Restore(ipampool.Entry{Addr: a, State: ipampool.PendingRelease, Since: m.now()})
		}
	}
	for a, until := range st.Cooldowns {
		if _, ok := m.pool.Get(a); !ok {
			_ = m.pool.Restore(ipampool.Entry{Addr: a, State: ipampool.Cooldown, Since: until.Add(-m.cfg.Limits.Cooldown), Until: until})
		}
	}
	c := m.pool.Counts()
	m.log.Info("restored state", "assigned", c.Assigned, "cooldown", c.Cooldown, "pendingRelease", c.PendingRelease)
	if len(errs) > 0 {
		m.log.Error("state held conflicting allocations; kept the first of each", "err", errors.Join(errs...))
	}
	return nil
}

// Grant is what RequestIPs hands back.
type Grant struct {
	Entry  ipampool.Entry
	Subnet netip.Prefix
	MTU    uint32
}

// RequestIP returns the address held by o.Key, assigning one if it holds none. When the pool
// is empty it waits, up to RequestWait, for the loop's scale-up.
func (m *Manager) RequestIP(ctx context.Context, o ipampool.Owner) (Grant, error) {
	wait := waitBound{parent: ctx, deadline: time.Now().Add(m.cfg.RequestWait)}
	defer wait.stop()
	// Wait for the pool before taking the key: startup replays spooled releases under the
	// same key locks and must never wait behind a request that waits for startup.
	select {
	case <-m.ready:
	default:
		select {
		case <-m.ready:
		case <-wait.ctx().Done():
			return Grant{}, m.waitError(wait.ctx(), "cns has not read the NIC yet")
		}
	}
	unlock, free := m.keys.tryLock(o.Key)
	if !free {
		var err error
		if unlock, err = m.keys.lock(wait.ctx(), o.Key); err != nil {
			return Grant{}, err
		}
	}
	defer unlock()
	for {
		m.mu.Lock()
		if m.stopping {
			m.mu.Unlock()
			return Grant{}, ErrShuttingDown
		}
		e, existed, err := m.pool.Assign(o, m.now())
		if err == nil && existed {
			if err := conflict(e.Owner, o); err != nil {
				m.mu.Unlock()
				return Grant{}, err
			}
		}
		if err == nil {
			g := Grant{Entry: e, Subnet: m.nicState.Subnet, MTU: m.cfg.MTU}
			low := m.pool.Counts().Available < m.cfg.Limits.MinFree
			m.mu.Unlock()
			if existed {
				return g, nil
			}
			if low {
				m.poke() // below the low watermark: the loop should grow now, not at its next tick
			}
			if err := m.store.PutAllocation(store.Allocation{Addr: e.Addr, Owner: o, AssignedAt: e.AssignedAt}); err != nil {
				m.mu.Lock()
				m.pool.Unassign(o.Key, time.Time{})
				m.mu.Unlock()
				return Grant{}, fmt.Errorf("%w: persist assignment of %s: %w", ErrStore, e.Addr, err)
			}
			if m.watched() { // the message is built only for a watcher
				m.publish(eventAssigned, e.Addr, fmt.Sprintf("%s/%s (%s %s)", o.PodNamespace, o.PodName, o.ContainerID, o.IfName))
			}
			return g, nil
		}
		if err := m.exhaustedLocked(); err != nil {
			m.mu.Unlock()
			return Grant{}, err
		}
		ch := m.changed
		m.waiters++
		m.mu.Unlock()
		m.poke()
		bounded := wait.ctx()
		select {
		case <-ch:
		case <-bounded.Done():
		}
		m.mu.Lock()
		m.waiters--
		m.mu.Unlock()
		if bounded.Err() != nil {
			return Grant{}, m.waitError(bounded, "")
		}
	}
}

// waitBound is a request's context bounded by its deadline, made only when the request must
// wait: most are answered at once from the warm pool, and need no timer.
type waitBound struct {
	parent   context.Context
	deadline time.Time
	bounded  context.Context
	cancel   context.CancelFunc
}

func (w *waitBound) ctx() context.Context {
	if w.bounded == nil {
		w.bounded, w.cancel = context.WithDeadline(w.parent, w.deadline)
	}
	return w.bounded
}

func (w *waitBound) stop() {
	if w.cancel != nil {
		w.cancel()
	}
}

// exhaustedLocked returns ErrExhausted when no address can come: nothing cooling down,
// nothing being added, and the NIC limit or the subnet leaves no room.
func (m *Manager) exhaustedLocked() error {
	c := m.pool.Counts()
	if c.Cooldown > 0 || c.PendingRelease > 0 || m.unadopted > 0 || m.inflight != nil && m.inflight.Add > 0 {
		return nil
	}
	in := m.inputLocked()
	in.Waiters++
	if d := ipampool.Decide(in); d.Add == 0 && d.AtLimit {
		return fmt.Errorf("%w: all %d addresses this node may hold are assigned (--max-ips=%d counts %d ip configurations cns did not create; Azure allows %d per NIC)",
			ErrExhausted, c.Total(), m.cfg.Limits.MaxIPs, in.Foreign, ipampool.NICHardLimit)
	}
	if m.nicFull {
		return fmt.Errorf("%w: NIC %s holds all the ip configurations Azure allows it (%d of cns's, %d others; cause: %v)",
			ErrExhausted, m.nicState.ID, c.Total(), m.foreignConfigs, m.lastErr)
	}
	if m.subnetFull {
		return fmt.Errorf("%w: subnet %s is full: the VNet has no free address for this node (cause: %v)",
			ErrExhausted, m.nicState.Subnet, m.lastErr)
	}
	return nil
}

// inputLocked is what the policy sees of the pool now.
func (m *Manager) inputLocked() ipampool.Input {
	c := m.pool.Counts()
	c.Pending += m.unadopted
	return ipampool.Input{Counts: c, Waiters: m.waiters, Limits: m.cfg.Limits,
		Foreign:      m.foreignConfigs - c.Foreign, // those a pod holds are in Counts already
		KeepReleases: m.unsettled || !m.nicState.Succeeded()}
}

// waitError explains why a wait ended without an address.
func (m *Manager) waitError(ctx context.Context, what string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("request cancelled while waiting for an address: %w", ctx.Err())
	}
	if err := m.exhaustedLocked(); err != nil {
		return err
	}
	if m.lastErr != nil {
		return fmt.Errorf("%w: no free address and the cloud API is failing (%v); cns keeps retrying, try again later",
			ErrCloudUnavailable, m.lastErr)
	}
	if what == "" {
		what = "no free address yet"
		if m.inflight != nil {
			what = fmt.Sprintf("no free address yet; a NIC write adding %d addresses has been in flight for %s",
				m.inflight.Add, m.now().Sub(m.inflightAt).Round(time.Millisecond))
		}
	}
	return fmt.Errorf("%w after %s: %s; try again later", ErrWaitTimeout, m.cfg.RequestWait, what)
}

// ReleaseIP returns k's address to the pool, whatever network holds it.
func (m *Manager) ReleaseIP(ctx context.Context, k ipampool.Key) (released bool, err error) {
	return m.ReleaseNetworkIP(ctx, k, "")
}

// ReleaseNetworkIP returns k's address to the pool: durable first, then in memory. An unknown
// key, or one held for a network other than network (when set), is success with
// released=false: a DEL of one network never releases another network's pod. It gives up
// with ctx's error when ctx ends while another call on k holds the key.
func (m *Manager) ReleaseNetworkIP(ctx context.Context, k ipampool.Key, network string) (released bool, err error) {
	unlock, err := m.keys.lock(ctx, k)
	if err != nil {
		return false, err
	}
	defer unlock()
	return m.releaseHeld(k, network)
}

// releaseHeld is ReleaseNetworkIP for a caller holding k's key lock.
func (m *Manager) releaseHeld(k ipampool.Key, network string) (released bool, err error) {
	m.mu.Lock()
	e, ok := m.pool.Lookup(k)
	m.mu.Unlock()
	if !ok {
		return false, nil
	}
	if network != "" && e.Owner.Network != network {
		m.log.Warn("release for another network ignored", "containerID", k.ContainerID, "ifname", k.IfName,
			"network", network, "heldBy", e.Owner.Network, "addr", e.Addr)
		return false, nil
	}
	now := m.now()
	var until time.Time
	if m.cfg.Limits.Cooldown > 0 && !e.Missing && !e.Foreign {
		until = now.Add(m.cfg.Limits.Cooldown)
	}
	if err := m.store.ReleaseAllocation(k, e.Addr, until); err != nil {
		return false, fmt.Errorf("%w: persist release of %s: %w", ErrStore, e.Addr, err)
	}
	m.mu.Lock()
	m.pool.Release(k, now, m.cfg.Limits.Cooldown)
	if m.cfg.Limits.Cooldown == 0 {
		m.notifyLocked()
	}
	m.mu.Unlock()
	if m.watched() {
		m.publish(eventReleased, e.Addr, k.ContainerID+" "+k.IfName)
	}
	return true, nil
}

// Lookup returns k's grant without assigning.
func (m *Manager) Lookup(k ipampool.Key) (Grant, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.pool.Lookup(k)
	return Grant{Entry: e, Subnet: m.nicState.Subnet, MTU: m.cfg.MTU}, ok
}

// notifyLocked wakes every waiter.
func (m *Manager) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// poke wakes the loop without blocking.
func (m *Manager) poke() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}
