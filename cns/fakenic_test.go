package cns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vnet-cni/vnet-cni/cns/cloud"
	"github.com/vnet-cni/vnet-cni/cns/store"
	"github.com/vnet-cni/vnet-cni/ipampool"
)

// fakeNIC is the cloud behind NICAPI, in memory and deterministic under testing/synctest,
// in the manner of Cilium's Azure API mock: a subnet allocator, Azure's per-NIC limit, etags,
// provisioning states, long-running writes, and per-call error and delay injection.
type fakeNIC struct {
	mu         sync.Mutex
	subnet     netip.Prefix
	primary    netip.Addr
	next       netip.Addr // lowest address never handed out
	configs    []fakeConfig
	etag       int
	state      string
	maxConfigs int // ip configurations, the primary included (Azure: 256)
	subnetLeft int // addresses the subnet can still give; < 0 is unlimited
	busy       bool
	seq        int // names of new configurations
	faults     []*fakeFault
	writes     []cloud.Change // every UpdateIPConfigs call, in order
	writesAt   []time.Time    // when each was made
	gets       int
}

// fakeSnapshot is the fake's NIC.Snapshot: the version it was taken of.
type fakeSnapshot struct{ etag string }

type fakeConfig struct {
	name string
	addr netip.Addr
}

// fakeFault applies to the next count matching calls (count 0: every one).
type fakeFault struct {
	op    string                  // "get" or "update"
	count int                     // calls left; 0 is unlimited
	when  func(cloud.Change) bool // update: only changes this matches (nil: all)
	delay time.Duration           // the call takes this long before anything else (ctx honoured)
	err   error                   // answer with this, having changed nothing
	lro   time.Duration           // update: applied at once, NIC Updating, settles after lro
	fail  bool                    // update: the operation ends Failed (configs reverted)
	keep  bool                    // with fail: the written configs stay, NIC Failed
}

var _ NICAPI = (*fakeNIC)(nil)

func newFakeNIC() *fakeNIC {
	return &fakeNIC{subnet: netip.MustParsePrefix("10.240.0.0/16"), primary: netip.MustParseAddr("10.240.0.4"),
		next: netip.MustParseAddr("10.240.0.5"), etag: 1, state: cloud.ProvisioningSucceeded, maxConfigs: 256, subnetLeft: -1}
}

// inject queues a fault.
func (f *fakeNIC) inject(ft fakeFault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, &ft)
}

func (f *fakeNIC) clearFaults() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = nil
}

func (f *fakeNIC) takeFaultLocked(op string, ch *cloud.Change) *fakeFault {
	for i, ft := range f.faults {
		if ft.op != op || (ft.when != nil && (ch == nil || !ft.when(*ch))) {
			continue
		}
		c := *ft
		if ft.count > 0 {
			if ft.count--; ft.count == 0 {
				f.faults = append(f.faults[:i], f.faults[i+1:]...)
			}
		}
		return &c
	}
	return nil
}

// addConfig puts an ip configuration on the NIC as an operator would (no etag check).
func (f *fakeNIC) addConfig(name string, addr netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.configs = append(f.configs, fakeConfig{name, addr})
	f.etag++
}

// ownAddrs returns the addresses of cns's configurations on the NIC.
func (f *fakeNIC) ownAddrs() []netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.viewLocked().Secondaries
}

func (f *fakeNIC) hasAddr(a netip.Addr) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.ContainsFunc(f.configs, func(c fakeConfig) bool { return c.addr == a })
}

func (f *fakeNIC) provisioning() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}

// writeTimes returns when each write was attempted.
func (f *fakeNIC) writeTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.writesAt)
}

// writeLog returns every write attempted so far.
func (f *fakeNIC) writeLog() []cloud.Change {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.writes)
}

func (f *fakeNIC) viewLocked() cloud.NIC {
	n := cloud.NIC{ID: "/fake/nic0", ETag: fmt.Sprint(f.etag), Primary: f.primary, Subnet: f.subnet, ProvisioningState: f.state}
	n.Snapshot = fakeSnapshot{n.ETag}
	for _, c := range f.configs {
		if cloud.OwnConfigName(c.name) && c.addr.Is4() {
			n.Secondaries = append(n.Secondaries, c.addr)
		} else {
			n.Foreign = append(n.Foreign, cloud.ForeignConfig{Name: c.name, Addr: c.addr})
		}
	}
	slices.SortFunc(n.Secondaries, netip.Addr.Compare)
	return n
}

func waitCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return &cloud.Error{Kind: cloud.KindUnavailable, Err: ctx.Err()}
	case <-t.C:
		return nil
	}
}

func (f *fakeNIC) GetNIC(ctx context.Context) (cloud.NIC, error) {
	f.mu.Lock()
	f.gets++
	ft := f.takeFaultLocked("get", nil)
	f.mu.Unlock()
	if ft != nil {
		if err := waitCtx(ctx, ft.delay); err != nil {
			return cloud.NIC{}, err
		}
		if ft.err != nil {
			return cloud.NIC{}, ft.err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.viewLocked(), nil
}

func (f *fakeNIC) UpdateIPConfigs(ctx context.Context, ch cloud.Change) (cloud.NIC, error) {
	f.mu.Lock()
	f.writes = append(f.writes, cloud.Change{ETag: ch.ETag, Snapshot: ch.Snapshot, Add: ch.Add, Remove: slices.Clone(ch.Remove)})
	f.writesAt = append(f.writesAt, time.Now())
	ft := f.takeFaultLocked("update", &ch)
	f.mu.Unlock()
	if ft == nil {
		ft = &fakeFault{}
	}
	if err := waitCtx(ctx, ft.delay); err != nil {
		return cloud.NIC{}, err
	}
	if ft.err != nil {
		return cloud.NIC{}, ft.err
	}

	f.mu.Lock()
	if f.busy {
		f.mu.Unlock()
		return cloud.NIC{}, &cloud.Error{Kind: cloud.KindBusy, Status: 409, Code: "AnotherOperationInProgress", Err: errors.New("fake: write in progress")}
	}
	if ch.ETag != "" && ch.ETag != fmt.Sprint(f.etag) {
		f.mu.Unlock()
		return cloud.NIC{}, &cloud.Error{Kind: cloud.KindConflict, Status: 412, Err: fmt.Errorf("fake: etag %d, decided on %s", f.etag, ch.ETag)}
	}
	prev, prevNext, prevLeft := slices.Clone(f.configs), f.next, f.subnetLeft
	var out []fakeConfig
	for _, c := range f.configs {
		if cloud.OwnConfigName(c.name) && slices.Contains(ch.Remove, c.addr) {
			continue // only cns's own configurations can be removed through this boundary
		}
		out = append(out, c)
	}
	if 1+len(out)+ch.Add > f.maxConfigs {
		f.mu.Unlock()
		return cloud.NIC{}, &cloud.Error{Kind: cloud.KindNICFull, Status: 400, Code: "MaxIPConfigurationsPerNicLimitReached", Err: errors.New("fake: NIC full")}
	}
	if f.subnetLeft >= 0 && ch.Add > f.subnetLeft {
		f.mu.Unlock()
		return cloud.NIC{}, &cloud.Error{Kind: cloud.KindSubnetFull, Status: 400, Code: "SubnetIsFull", Err: errors.New("fake: subnet full")}
	}
	for range ch.Add {
		f.seq++
		out = append(out, fakeConfig{fmt.Sprintf("cns-%012x", f.seq), f.next})
		f.next = f.next.Next()
		if f.subnetLeft > 0 {
			f.subnetLeft--
		}
	}
	f.configs, f.etag = out, f.etag+1
	if ft.lro == 0 && !ft.fail {
		f.state = cloud.ProvisioningSucceeded
		defer f.mu.Unlock()
		return f.viewLocked(), nil
	}
	// A long-running write: in effect on the NIC at once, Updating until it settles.
	f.state, f.busy = cloud.ProvisioningUpdating, true
	done := make(chan struct{})
	time.AfterFunc(ft.lro, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.busy, f.etag = false, f.etag+1
		switch {
		case !ft.fail:
			f.state = cloud.ProvisioningSucceeded
		case ft.keep:
			f.state = cloud.ProvisioningFailed
		default:
			f.configs, f.next, f.subnetLeft, f.state = prev, prevNext, prevLeft, cloud.ProvisioningFailed
		}
		close(done)
	})
	f.mu.Unlock()
	select {
	case <-ctx.Done():
		return cloud.NIC{}, &cloud.Error{Kind: cloud.KindUnavailable, Err: fmt.Errorf("fake: poll NIC update: %w", ctx.Err())}
	case <-done:
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if ft.fail {
		return cloud.NIC{}, &cloud.Error{Kind: cloud.KindFailed, Code: "InternalServerError", Err: errors.New("fake: long-running operation Failed")}
	}
	return f.viewLocked(), nil
}

// memStore is Store in memory.
type memStore struct {
	mu       sync.Mutex
	allocs   map[ipampool.Key]store.Allocation
	cooldown map[netip.Addr]time.Time
	releases map[netip.Addr]bool
}

var _ Store = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{allocs: map[ipampool.Key]store.Allocation{}, cooldown: map[netip.Addr]time.Time{}, releases: map[netip.Addr]bool{}}
}

func (s *memStore) Load() (store.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := store.State{Cooldowns: map[netip.Addr]time.Time{}}
	for _, a := range s.allocs {
		st.Allocations = append(st.Allocations, a)
	}
	for a, t := range s.cooldown {
		st.Cooldowns[a] = t
	}
	for a := range s.releases {
		st.PendingReleases = append(st.PendingReleases, a)
	}
	return st, nil
}

func (s *memStore) PutAllocation(a store.Allocation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.cooldown, a.Addr)
	s.allocs[a.Owner.Key] = a
	return nil
}

func (s *memStore) ReleaseAllocation(k ipampool.Key, addr netip.Addr, until time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.allocs, k)
	delete(s.cooldown, addr)
	if !until.IsZero() {
		s.cooldown[addr] = until
	}
	return nil
}

func (s *memStore) MarkPendingRelease(addrs []netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range addrs {
		s.releases[a] = true
	}
	return nil
}

func (s *memStore) ForgetAddrs(addrs []netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range addrs {
		delete(s.releases, a)
		delete(s.cooldown, a)
	}
	return nil
}

// testConfig is a manager configuration for virtual-time tests: production-like timings,
// since waiting costs nothing in a synctest bubble.
func testConfig() ManagerConfig {
	return ManagerConfig{Limits: ipampool.DefaultLimits(), RequestWait: 20 * time.Second, CloudTimeout: 10 * time.Second,
		ReconcileInterval: 30 * time.Second, BackoffMin: 500 * time.Millisecond, BackoffMax: 30 * time.Second, MTU: 1500}
}

// startManager runs a manager over nic and st until the test's bubble ends; call it inside
// synctest.Test. It returns once the manager has read the NIC.
func startManager(t *testing.T, cfg ManagerConfig, nic NICAPI, st Store) *Manager {
	t.Helper()
	cfg.ReleaseSpool = t.TempDir()
	m := runManager(t, cfg, nic, st)
	<-m.Ready()
	return m
}

// runManager restores a manager over nic and st and runs it until the test ends.
func runManager(t *testing.T, cfg ManagerConfig, nic NICAPI, st Store) *Manager {
	t.Helper()
	m, err := NewManager(cfg, nic, st, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Restore(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return m
}

// request asks for an address for pod name, as RequestIPs does.
func request(m *Manager, name string) (netip.Addr, error) {
	g, err := m.RequestIP(context.Background(), ipampool.Owner{Key: ipampool.Key{ContainerID: name, IfName: "eth0"}})
	return g.Entry.Addr, err
}

// counts returns the pool's counts.
func (m *Manager) counts() ipampool.Counts {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pool.Counts()
}

// removals returns how many writes carried a removal of a.
func removals(log []cloud.Change, a netip.Addr) int {
	n := 0
	for _, ch := range log {
		if slices.Contains(ch.Remove, a) {
			n++
		}
	}
	return n
}

func addrsString(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}
