package cns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vnet-cni/vnet-cni/cns/cloud"
	"github.com/vnet-cni/vnet-cni/cns/store"
	"github.com/vnet-cni/vnet-cni/ipampool"
)

// Manager tests on virtual time (testing/synctest) over the in-memory fakeNIC. Timings are
// production's; a test's sleeps cost nothing and its assertions do not depend on the
// machine's speed.

func hasRemove(ch cloud.Change) bool { return len(ch.Remove) > 0 }

var rejected = &cloud.Error{Kind: cloud.KindRejected, Status: 400, Code: "IpConfigurationInUse",
	Err: errors.New("ip configuration is referenced by a load balancer backend pool")}

// withOwnConfigs puts n of cns's configurations on a fresh fake NIC, as a previous run left.
func withOwnConfigs(n int) *fakeNIC {
	f := newFakeNIC()
	for range n {
		f.mu.Lock()
		f.seq++
		f.configs = append(f.configs, fakeConfig{fmt.Sprintf("cns-%012x", f.seq), f.next})
		f.next = f.next.Next()
		f.mu.Unlock()
	}
	return f
}

func (m *Manager) pendingReleases() []netip.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pool.PendingReleases()
}

// requestAll runs n requests at once and returns their addresses and errors.
func requestAll(m *Manager, prefix string, n int) ([]netip.Addr, []error) {
	addrs, errs := make([]netip.Addr, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { addrs[i], errs[i] = request(m, fmt.Sprint(prefix, i)) })
	}
	wg.Wait()
	return addrs, errs
}

// Every write the pool makes carries the snapshot of the view it was decided on, whether that
// view was read or was the answer to the write before, so the backend writes on it without
// reading the NIC again.
func TestWritesCarryTheSnapshotOfTheViewTheyWereDecidedOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNIC()
		m := startManager(t, testConfig(), f, newMemStore())
		synctest.Wait()
		if _, errs := requestAll(m, "pod", 20); errors.Join(errs...) != nil {
			t.Fatal(errors.Join(errs...))
		}
		synctest.Wait()
		log := f.writeLog()
		if len(log) < 2 {
			t.Fatalf("writes: %+v, want the warm-up and growth after it", log)
		}
		for i, w := range log {
			if w.Snapshot != (fakeSnapshot{w.ETag}) {
				t.Fatalf("write %d, decided on etag %s, carried snapshot %v", i, w.ETag, w.Snapshot)
			}
		}
	})
}

// Item 5: a queued release gives way to a waiting request, without a cloud write.
func TestWaitingRequestCancelsQueuedRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := withOwnConfigs(30) // 6 above the high watermark of 24
		// The first removal fails with a 500: its addresses stay queued for removal.
		f.inject(fakeFault{op: "update", count: 1, when: hasRemove, err: &cloud.Error{Kind: cloud.KindUnavailable, Status: 500}})
		cfg := testConfig()
		cfg.BackoffMin = 20 * time.Second // the retry is far off when the burst comes
		m := startManager(t, cfg, f, newMemStore())
		time.Sleep(cfg.Limits.ReleaseDelay + time.Second)
		synctest.Wait()
		queued := m.pendingReleases()
		if len(queued) != 6 {
			t.Fatalf("queued releases %v, want 6 after a failed removal", queued)
		}
		if _, errs := requestAll(m, "pod", 24); errors.Join(errs...) != nil {
			t.Fatal(errors.Join(errs...))
		}
		writes := len(f.writeLog())
		a, err := request(m, "burst")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(queued, a) {
			t.Fatalf("the waiting request got %s, not one of the queued releases %v", a, queued)
		}
		if log := f.writeLog(); len(log) != writes || removals(log, a) != 1 {
			t.Fatalf("serving %s took cloud writes %+v", a, log[writes:])
		}
		if !f.hasAddr(a) {
			t.Fatalf("served %s, which the NIC does not hold", a)
		}
	})
}

// Item 5: a removal the cloud rejects every time does not hold back growth.
func TestGrowthNeverWaitsBehindARejectedRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := withOwnConfigs(30)
		f.inject(fakeFault{op: "update", when: hasRemove, err: rejected}) // every removal, forever
		cfg := testConfig()
		m := startManager(t, cfg, f, newMemStore())
		time.Sleep(cfg.Limits.ReleaseDelay + time.Second)
		synctest.Wait()
		if n := m.counts().PendingRelease; n == 0 {
			t.Fatal("no release was queued")
		}
		// A burst larger than everything on the NIC: growth must happen.
		addrs, errs := requestAll(m, "pod", 40)
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("burst behind a rejected removal: %v", err)
		}
		for _, a := range addrs {
			if !f.hasAddr(a) {
				t.Fatalf("served %s, which the NIC does not hold", a)
			}
		}
	})
}

// Item 5: a removal the cloud keeps rejecting is given up after maxRemovalAttempts, logged
// and counted, and its addresses serve the pool again.
func TestRemovalTheCloudKeepsRejectingIsGivenUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := withOwnConfigs(30)
		f.inject(fakeFault{op: "update", when: hasRemove, err: rejected})
		cfg := testConfig()
		before := testutil.ToFloat64(releasesAbandoned)
		m := startManager(t, cfg, f, newMemStore())
		time.Sleep(50 * time.Minute)
		synctest.Wait()
		log := f.writeLog()
		var tried []netip.Addr
		for _, ch := range log {
			for _, a := range ch.Remove {
				if !slices.Contains(tried, a) {
					tried = append(tried, a)
				}
			}
		}
		if len(tried) == 0 {
			t.Fatal("no removal was tried")
		}
		for _, a := range tried {
			if n := removals(log, a); n != maxRemovalAttempts {
				t.Fatalf("removal of %s tried %d times in 50 minutes, want %d then given up", a, n, maxRemovalAttempts)
			}
		}
		if c := m.counts(); c.PendingRelease != 0 || c.Available != 30 {
			t.Fatalf("counts %+v: the given-up addresses should be Available again", c)
		}
		if got := testutil.ToFloat64(releasesAbandoned) - before; got != float64(len(tried)) {
			t.Fatalf("cns_release_abandoned_total grew by %v, want %d", got, len(tried))
		}
	})
}

// Item 6: addresses of a write that has not reached Succeeded (the write timed out while
// ARM keeps working, then failed) are never served.
func TestAddressesOfAnUnfinishedWriteAreNotServed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNIC()
		// The first write outlives the cloud timeout (10 s) by far, then fails and is undone.
		f.inject(fakeFault{op: "update", count: 1, lro: 2 * time.Minute, fail: true})
		cfg := testConfig()
		cfg.ReconcileInterval = 5 * time.Second
		cfg.RequestWait = 5 * time.Minute
		m := startManager(t, cfg, f, newMemStore())
		a, err := request(m, "pod")
		if err != nil {
			t.Fatal(err)
		}
		if st := f.provisioning(); st != cloud.ProvisioningSucceeded {
			t.Fatalf("served %s while the NIC was %s", a, st)
		}
		time.Sleep(5 * time.Minute) // everything settles
		synctest.Wait()
		if !f.hasAddr(a) {
			t.Fatalf("served %s from a write that failed: the NIC does not hold it", a)
		}
	})
}

// Item 6: a failed write that left its configurations on the NIC (as ARM can, NIC Failed)
// is not served from until a write brings the NIC back to Succeeded, and that write does
// not add more than the pool needs.
func TestFailedWriteThatLeftItsConfigsIsNotServedUntilRewritten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNIC()
		f.inject(fakeFault{op: "update", count: 1, lro: 5 * time.Second, fail: true, keep: true})
		cfg := testConfig()
		cfg.ReconcileInterval = 5 * time.Second
		m := startManager(t, cfg, f, newMemStore())
		time.Sleep(time.Second)
		a, err := request(m, "pod")
		if err != nil {
			t.Fatal(err)
		}
		if st := f.provisioning(); st != cloud.ProvisioningSucceeded {
			t.Fatalf("served %s while the NIC was %s", a, st)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if own, c := f.ownAddrs(), m.counts(); len(own) != 16 || c.Available+c.Assigned != 16 {
			t.Fatalf("NIC holds %d of cns's configurations, pool %+v; want the failed write's 16, adopted", len(own), c)
		}
	})
}

// Item 6: a NIC that holds all the configurations Azure allows is ResourceExhausted, not an
// endless "cloud failing".
func TestNICFullIsResourceExhausted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNIC()
		f.maxConfigs = 11 // the VM size allows 10 secondaries, fewer than --max-ips
		cfg := testConfig()
		m := startManager(t, cfg, f, newMemStore())
		if _, errs := requestAll(m, "pod", 10); errors.Join(errs...) != nil {
			t.Fatal(errors.Join(errs...))
		}
		_, err := request(m, "one-too-many")
		if !errors.Is(err, ErrExhausted) || status.Code(toStatus(err)) != codes.ResourceExhausted || !strings.Contains(err.Error(), "NIC") {
			t.Fatalf("request on a full NIC: %v (code %s), want ResourceExhausted naming the NIC", err, status.Code(toStatus(err)))
		}
	})
}

// Item 2: an operator's ip configurations (IPv4 "web", IPv6 "web6", a name that only looks
// like cns's) are never adopted, assigned or removed.
func TestForeignIPConfigsAreNeverAdoptedAssignedOrRemoved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNIC()
		web, web6, lookalike := netip.MustParseAddr("10.240.0.200"), netip.MustParseAddr("fd00::5"), netip.MustParseAddr("10.240.0.201")
		f.addConfig("web", web)
		f.addConfig("web6", web6)
		f.addConfig("cns-web", lookalike)
		cfg := testConfig()
		m := startManager(t, cfg, f, newMemStore())
		addrs, errs := requestAll(m, "pod", 30)
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			if a == web || a == lookalike {
				t.Fatalf("handed out %s of an operator's ip configuration", a)
			}
		}
		for i := range 30 { // scale down: everything idle goes back
			if _, err := m.ReleaseIP(context.Background(), ipampool.Key{ContainerID: fmt.Sprint("pod", i), IfName: "eth0"}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		log := f.writeLog()
		for _, a := range []netip.Addr{web, web6, lookalike} {
			if removals(log, a) != 0 || !f.hasAddr(a) {
				t.Fatalf("foreign %s: %d removals, still on NIC %v", a, removals(log, a), f.hasAddr(a))
			}
			if _, ok := m.pool.Get(a); ok {
				t.Fatalf("foreign %s is in the pool", a)
			}
		}
		if got := len(log); got < 3 {
			t.Fatalf("expected growth and scale-down writes, got %+v", log)
		}
	})
}

// Item 2: foreign configurations take room under --max-ips.
func TestForeignIPConfigsCountAgainstMaxIPs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNIC()
		f.addConfig("web", netip.MustParseAddr("10.240.0.200"))
		f.addConfig("web6", netip.MustParseAddr("fd00::5"))
		f.addConfig("lb-a", netip.MustParseAddr("10.240.0.201"))
		f.addConfig("lb-b", netip.MustParseAddr("10.240.0.202"))
		cfg := testConfig()
		cfg.Limits.MaxIPs = 12
		m := startManager(t, cfg, f, newMemStore())
		if _, errs := requestAll(m, "pod", 8); errors.Join(errs...) != nil {
			t.Fatal(errors.Join(errs...))
		}
		_, err := request(m, "ninth")
		if status.Code(toStatus(err)) != codes.ResourceExhausted {
			t.Fatalf("ninth request with 8 of 12 taken by foreign configurations... got %v, want ResourceExhausted", err)
		}
		if own := f.ownAddrs(); len(own) != 8 {
			t.Fatalf("cns holds %d configurations; with 4 foreign under --max-ips=12 it may hold 8", len(own))
		}
	})
}

// Item 2, migration: a pod that an older cns gave the address of a foreign configuration
// keeps it; once released it leaves the pool, is never handed out again and never removed.
func TestPodOnForeignConfigKeepsItAndReleaseLeavesTheConfig(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNIC()
		web := netip.MustParseAddr("10.240.0.200")
		f.addConfig("web", web)
		st := newMemStore()
		old := ipampool.Owner{Key: ipampool.Key{ContainerID: "old-pod", IfName: "eth0"}}
		_ = st.PutAllocation(store.Allocation{Addr: web, Owner: old, AssignedAt: time.Now()})
		cfg := testConfig()
		m := startManager(t, cfg, f, st)
		g, ok := m.Lookup(old.Key)
		if !ok || g.Entry.Addr != web || g.Entry.Missing {
			t.Fatalf("old pod's allocation after start: %+v %v", g.Entry, ok)
		}
		if _, err := m.ReleaseIP(context.Background(), old.Key); err != nil {
			t.Fatal(err)
		}
		addrs, errs := requestAll(m, "new", 20)
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if slices.Contains(addrs, web) {
			t.Fatalf("foreign %s handed out again after its pod left", web)
		}
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if removals(f.writeLog(), web) != 0 || !f.hasAddr(web) {
			t.Fatalf("foreign %s removed from the NIC", web)
		}
		if _, ok := m.pool.Get(web); ok {
			t.Fatalf("foreign %s still in the pool after release", web)
		}
	})
}

// Backoff: throttled writes are spaced by at least the server's Retry-After, and the pool
// recovers by itself once the throttling ends.
func TestThrottledWritesAreSpacedByRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNIC()
		cfg := testConfig()
		m := startManager(t, cfg, f, newMemStore())
		synctest.Wait()
		const retryAfter = 7 * time.Second // above --backoff-min's first steps
		f.inject(fakeFault{op: "update", err: &cloud.Error{Kind: cloud.KindThrottled, Status: 429, RetryAfter: retryAfter}})
		start := len(f.writeLog())
		if _, errs := requestAll(m, "pod", 16); errors.Join(errs...) != nil { // drain: growth is needed
			t.Fatal(errors.Join(errs...))
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		at := f.writeTimes()[start:]
		if len(at) < 3 {
			t.Fatalf("%d throttled attempts in a minute", len(at))
		}
		for i := 1; i < len(at); i++ {
			if gap := at[i].Sub(at[i-1]); gap < retryAfter {
				t.Fatalf("attempts %d and %d %s apart under Retry-After %s", i-1, i, gap, retryAfter)
			}
		}
		f.clearFaults()
		time.Sleep(cfg.BackoffMax + retryAfter)
		synctest.Wait()
		if c := m.counts(); c.Available < cfg.Limits.MinFree {
			t.Fatalf("pool did not recover after the throttling: %+v", c)
		}
	})
}

// Subnet halving: a write the subnet cannot hold is halved until it fits; a write of one
// that does not fit means the subnet is full, which requests learn as ResourceExhausted.
func TestSubnetFullHalvesTheWriteThenIsResourceExhausted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNIC()
		f.subnetLeft = 5
		m := startManager(t, testConfig(), f, newMemStore())
		time.Sleep(time.Second)
		synctest.Wait()
		var adds []int
		for _, ch := range f.writeLog() {
			adds = append(adds, ch.Add)
		}
		if !slices.Equal(adds[:3], []int{16, 8, 4}) {
			t.Fatalf("writes added %v, want 16, 8, 4 (halved until it fits)", adds)
		}
		if _, errs := requestAll(m, "pod", 5); errors.Join(errs...) != nil {
			t.Fatal(errors.Join(errs...))
		}
		_, err := request(m, "sixth")
		if status.Code(toStatus(err)) != codes.ResourceExhausted || !strings.Contains(err.Error(), "subnet") {
			t.Fatalf("request on a full subnet: %v, want ResourceExhausted naming the subnet", err)
		}
	})
}

// Conflict (412): a write decided on a stale etag re-reads the NIC and is decided again at
// once, not after a backoff; what the other writer added is adopted only if it is cns's.
func TestConflictRereadsAndRetriesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNIC()
		cfg := testConfig()
		cfg.BackoffMin = 10 * time.Second // a backoff would show
		m := startManager(t, cfg, f, newMemStore())
		synctest.Wait()
		f.addConfig("web", netip.MustParseAddr("10.240.0.200")) // someone else writes the NIC
		writes := len(f.writeLog())
		a, err := request(m, "pod") // nothing else to wait on: the loop grows below min free
		if err != nil {
			t.Fatal(err)
		}
		if _, errs := requestAll(m, "more", 8); errors.Join(errs...) != nil {
			t.Fatal(errors.Join(errs...))
		}
		time.Sleep(time.Second)
		synctest.Wait()
		log, at := f.writeLog()[writes:], f.writeTimes()[writes:]
		if len(log) < 2 {
			t.Fatalf("writes after the other writer: %+v", log)
		}
		if gap := at[1].Sub(at[0]); gap >= cfg.BackoffMin/2 {
			t.Fatalf("the retry after a 412 waited %s", gap)
		}
		if a == netip.MustParseAddr("10.240.0.200") {
			t.Fatal("the other writer's configuration was handed out")
		}
	})
}

// Provisioning states: a NIC read Updating (another operation at work) is read again until
// it settles, and nothing it lists is served meanwhile.
func TestUpdatingNICIsReadAgainAndNotServedFrom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNIC()
		f.mu.Lock()
		f.state = cloud.ProvisioningUpdating
		for range 16 { // another operation is adding cns-named configurations
			f.seq++
			f.configs = append(f.configs, fakeConfig{fmt.Sprintf("cns-%012x", f.seq), f.next})
			f.next = f.next.Next()
		}
		f.mu.Unlock()
		m := startManager(t, testConfig(), f, newMemStore())
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if c := m.counts(); c.Available != 0 || len(f.writeLog()) != 0 {
			t.Fatalf("while the NIC is Updating: pool %+v, writes %+v; want nothing served and nothing written", c, f.writeLog())
		}
		f.mu.Lock()
		f.state = cloud.ProvisioningSucceeded
		f.mu.Unlock()
		time.Sleep(time.Minute)
		synctest.Wait()
		if c := m.counts(); c.Available != 16 || len(f.writeLog()) != 0 {
			t.Fatalf("after the NIC settled: pool %+v, writes %+v; want the 16 adopted, no write", c, f.writeLog())
		}
	})
}
