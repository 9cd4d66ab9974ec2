package cns

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/vnet-cni/vnet-cni/cns/cloud"
	"github.com/vnet-cni/vnet-cni/ipampool"
)

// maxIdle bounds how long the loop sleeps with nothing scheduled, so release candidates
// maturing after their delay are noticed without a timer per address.
const maxIdle = 500 * time.Millisecond

// maxRemovalAttempts is how many times the cloud may reject the removal of an address
// before cns gives it up.
const maxRemovalAttempts = 3

// releaseHoldFor is how long an address whose removal was given up stays off the release
// list: long enough not to spend the write quota on it, short enough that an operator's fix
// (detaching the load balancer that holds it, say) is noticed without a restart.
const releaseHoldFor = time.Hour

// Run is the pool's only cloud writer. It reads the NIC until that succeeds, opens the pool
// to requests, then keeps it between its watermarks until ctx ends; the write in flight at
// that moment is given up to CloudTimeout to finish.
func (m *Manager) Run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := m.reconcile(ctx); err == nil {
			break
		}
		m.sleep(ctx, m.retryDelay())
	}
	if ctx.Err() != nil {
		return
	}
	// Releases the plugin could not deliver while cns was down are applied before any
	// request is answered.
	m.replaySpool(m.cfg.ReleaseSpool)
	close(m.ready)
	for ctx.Err() == nil {
		m.step(context.WithoutCancel(ctx))
		m.sleep(ctx, m.nextWake())
	}
	m.mu.Lock()
	m.stopping = true
	m.notifyLocked()
	m.mu.Unlock()
}

func (m *Manager) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(max(d, time.Millisecond))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-m.kick:
	case <-t.C:
	}
}

// Ready is closed once the first NIC read has finished.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

func (m *Manager) nextWake() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	wake := min(maxIdle, m.reconcileAt.Sub(now))
	if t, ok := m.pool.NextExpiry(); ok {
		wake = min(wake, t.Sub(now))
	}
	if !m.demandWake.IsZero() {
		wake = min(wake, m.demandWake.Sub(now))
	}
	if m.failures > 0 {
		wake = max(wake, m.nextAttempt.Sub(now))
		wake = min(wake, m.reconcileAt.Sub(now))
	}
	return wake
}

// step makes the pool's next move: expire cooldowns, re-read the NIC when due, return
// queued releases the pool needs, then at most one NIC write.
func (m *Manager) step(ctx context.Context) {
	now := m.now()
	m.mu.Lock()
	if len(m.pool.Expire(now)) > 0 {
		m.notifyLocked()
	}
	due := !now.Before(m.reconcileAt)
	m.mu.Unlock()
	if due {
		if m.reconcile(ctx) == nil {
			m.replaySpool(m.cfg.ReleaseSpool)
		}
	}

	m.mu.Lock()
	if m.unsettled { // the NIC may still change under a decision: read it again first
		m.mu.Unlock()
		return
	}
	in := m.inputLocked()
	var hold time.Duration
	in.Bound, hold = m.demandLocked(now, in)
	d := ipampool.Decide(in)
	// Cancelling a queued release costs no cloud call, so it happens even while backing off.
	cancelled := m.cancelReleasesLocked(d.Cancel, now)
	if now.Before(m.nextAttempt) {
		m.mu.Unlock()
		m.forget(cancelled)
		return
	}
	if d.Add > 0 && hold > 0 { // a burst of bound pods is still arriving: one write for all of it
		m.demandWake = now.Add(hold)
		m.mu.Unlock()
		m.forget(cancelled)
		return
	}
	m.demandWake, m.demandSince = time.Time{}, time.Time{}
	ch, fresh := m.changeLocked(d, now)
	if ch == nil {
		m.mu.Unlock()
		m.forget(cancelled)
		return
	}
	m.inflight, m.inflightAt = ch, now
	m.pool.SetPending(ch.Add)
	m.mu.Unlock()
	m.forget(cancelled)

	if len(fresh) > 0 {
		if err := m.store.MarkPendingRelease(fresh); err != nil {
			m.log.Error("persist pending release; not releasing", "err", err)
			m.mu.Lock()
			m.pool.CancelRelease(fresh, now)
			m.inflight = nil
			m.pool.SetPending(0)
			m.mu.Unlock()
			return
		}
	}
	m.write(ctx, ch)
}

// cancelReleasesLocked returns up to n queued releases to Available (the policy wants
// them for waiters) and returns them, for the store to forget. Only called on a settled,
// successful view of the NIC, which still holds them.
func (m *Manager) cancelReleasesLocked(n int, now time.Time) []netip.Addr {
	if n <= 0 {
		return nil
	}
	pr := m.pool.PendingReleases()
	pr = pr[:min(n, len(pr))]
	m.pool.CancelRelease(pr, now)
	for _, a := range pr {
		delete(m.removeRejects, a)
	}
	if len(m.pool.PendingReleases()) == 0 {
		m.splitRemovals = false
	}
	m.log.Info("cancelled queued releases: requests need them", "count", len(pr))
	m.notifyLocked()
	return pr
}

// changeLocked turns the policy's decision into one NIC write: the additions, the queued
// removals and any new ones together, so growth never waits behind a removal. After a
// write carrying removals was rejected, additions go alone until the removals go through,
// are cancelled or are given up.
// A NIC whose last operation Failed is written even with nothing to change: ARM's remedy is
// to PUT it again, which makes the configurations it lists take effect (or not) for sure.
func (m *Manager) changeLocked(d ipampool.Decision, now time.Time) (ch *cloud.Change, fresh []netip.Addr) {
	ch = &cloud.Change{ETag: m.nicState.ETag, Snapshot: m.nicState.Snapshot, Add: d.Add}
	if m.addCap > 0 {
		ch.Add = min(ch.Add, m.addCap)
	}
	if ch.Add == 0 || !m.splitRemovals {
		ch.Remove = m.pool.PendingReleases()
	}
	if d.Release > 0 {
		var c []netip.Addr
		for _, a := range m.pool.ReleaseCandidates(now, m.cfg.Limits.ReleaseDelay, m.pool.Counts().Available) {
			if until, held := m.releaseHold[a]; held && now.Before(until) {
				continue
			}
			delete(m.releaseHold, a)
			if c = append(c, a); len(c) == d.Release {
				break
			}
		}
		if err := m.pool.MarkRelease(c, now); err != nil {
			m.log.Error("mark release", "err", err)
		} else {
			fresh = c
			ch.Remove = append(ch.Remove, c...)
		}
	}
	if ch.Add == 0 && len(ch.Remove) == 0 && m.nicState.Succeeded() {
		return nil, nil
	}
	return ch, fresh
}

// write performs one NIC write and folds its outcome into the pool.
func (m *Manager) write(ctx context.Context, ch *cloud.Change) {
	cctx, cancel := context.WithTimeout(ctx, m.cfg.CloudTimeout)
	start := time.Now()
	nic, err := m.nic.UpdateIPConfigs(cctx, *ch)
	cancel()
	observeCloud("update_ip_configs", start, err)
	now := m.now()

	m.mu.Lock()
	m.inflight = nil
	m.pool.SetPending(0)
	m.nicWrites++
	if err != nil {
		m.failLocked(now, fmt.Errorf("NIC write (add %d, remove %d): %w", ch.Add, len(ch.Remove), err))
		switch kind := cloud.KindOf(err); kind {
		case cloud.KindConflict:
			m.reconcileAt = now // stale view: re-read before deciding again
		case cloud.KindUnavailable, cloud.KindFailed:
			// The write may have reached the NIC (a timeout while ARM works on, an operation
			// that failed half-way): nothing is decided or served until a read shows how it
			// ended. A removal the cloud refused counts towards giving it up.
			m.unsettled, m.settleTries, m.reconcileAt = true, 0, now
			if kind == cloud.KindFailed {
				m.rejectRemovalsLocked(ch, now)
			}
		case cloud.KindRejected:
			m.rejectRemovalsLocked(ch, now)
		case cloud.KindSubnetFull, cloud.KindNICFull:
			// Azure fails the whole write when the subnet or the NIC cannot hold all of it;
			// ask for half at once. Only a write of one failing means it is full.
			if ch.Add > 1 {
				m.addCap, m.subnetFull, m.nicFull, m.nextAttempt = ch.Add/2, false, false, now
			}
		}
		m.notifyLocked()
		m.mu.Unlock()
		m.publish(eventError, netip.Addr{}, err.Error())
		return
	}
	m.succeedLocked()
	for _, a := range ch.Remove {
		delete(m.removeRejects, a)
	}
	if len(ch.Remove) > 0 {
		m.splitRemovals = false // the removals went through: they may travel with additions again
	}
	forget := m.applyNICLocked(nic, now)
	m.notifyLocked()
	c := m.pool.Counts()
	m.mu.Unlock()

	m.forget(forget)
	switch {
	case ch.Add > 0:
		m.log.Info("scaled up", "added", ch.Add, "removed", len(ch.Remove), "available", c.Available, "assigned", c.Assigned, "took", time.Since(start).Round(time.Millisecond))
		m.publish(eventScaleUp, netip.Addr{}, fmt.Sprintf("added %d ip configurations, removed %d", ch.Add, len(ch.Remove)))
	case len(ch.Remove) > 0:
		m.log.Info("scaled down", "removed", len(ch.Remove), "available", c.Available, "assigned", c.Assigned)
		m.publish(eventScaleDown, netip.Addr{}, fmt.Sprintf("removed %d ip configurations", len(ch.Remove)))
	default:
		m.log.Info("NIC rewritten after a failed operation", "provisioningState", nic.ProvisioningState, "available", c.Available)
	}
}

// rejectRemovalsLocked counts a rejected write against the removals it carried. Additions
// go without them next time. A removal rejected maxRemovalAttempts times is given up: the
// NIC is read again, and if it still holds the address, the address is Available again (it
// serves pods like any other) and is not chosen for release again for releaseHoldFor.
func (m *Manager) rejectRemovalsLocked(ch *cloud.Change, now time.Time) {
	if len(ch.Remove) == 0 {
		return
	}
	m.splitRemovals = true
	var out []netip.Addr
	for _, a := range ch.Remove {
		if m.removeRejects[a]++; m.removeRejects[a] >= maxRemovalAttempts {
			out = append(out, a)
			delete(m.removeRejects, a)
			m.releaseHold[a] = now.Add(releaseHoldFor)
			m.abandoned[a] = true
		}
	}
	if len(out) == 0 {
		return
	}
	// Nothing is decided until the NIC is read: only then is it sure to hold them.
	m.unsettled, m.settleTries, m.reconcileAt = true, 0, now
	releasesAbandoned.Add(float64(len(out)))
	m.log.Error("the cloud keeps rejecting the removal of these addresses; gave up, they serve the pool again",
		"addrs", out, "attempts", maxRemovalAttempts, "retryAfter", releaseHoldFor, "err", m.lastErr)
	m.publishLocked(eventError, netip.Addr{}, fmt.Sprintf("gave up removing %d addresses the cloud kept rejecting", len(out)))
}

// reviveAbandonedLocked returns given-up removals the NIC still holds to Available; called
// after a settled, successful read (SyncNIC has dropped those it no longer holds). It
// returns them, for the store to forget their pending release.
func (m *Manager) reviveAbandonedLocked(now time.Time) []netip.Addr {
	var out []netip.Addr
	for a := range m.abandoned {
		if e, ok := m.pool.Get(a); ok && e.State == ipampool.PendingRelease {
			out = append(out, a)
		}
		delete(m.abandoned, a)
	}
	m.pool.CancelRelease(out, now)
	if len(m.pool.PendingReleases()) == 0 {
		m.splitRemovals = false
	}
	return out
}

// reconcile re-reads the NIC and makes the pool agree with it.
func (m *Manager) reconcile(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, m.cfg.CloudTimeout)
	start := time.Now()
	nic, err := m.nic.GetNIC(cctx)
	cancel()
	observeCloud("get_nic", start, err)
	now := m.now()
	m.mu.Lock()
	m.reconcileAt = now.Add(m.cfg.ReconcileInterval)
	if err != nil {
		m.failLocked(now, fmt.Errorf("read NIC: %w", err))
		if m.unsettled {
			m.reconcileAt = m.nextAttempt
		}
		m.notifyLocked()
		m.mu.Unlock()
		return err
	}
	if m.lastErr != nil && m.inflight == nil && !m.subnetFull && !m.nicFull {
		// A read succeeding is not proof that writes will, but it ends "unreachable".
		m.lastErr = nil
	}
	forget := m.applyNICLocked(nic, now)
	m.notifyLocked()
	m.mu.Unlock()
	m.forget(forget)
	return nil
}

// applyNICLocked syncs the pool with nic and returns the addresses whose records the store
// should drop (gone from the NIC). Only a NIC whose last operation Succeeded is taken at
// its word: while it is Updating nothing is decided (it is read again soon); when it Failed,
// its configurations are not served until a write succeeds.
func (m *Manager) applyNICLocked(nic cloud.NIC, now time.Time) []netip.Addr {
	m.nicState = nic
	m.foreignConfigs = len(nic.Foreign)
	if !nic.Succeeded() {
		m.unadopted = 0
		for _, a := range nic.Secondaries {
			if _, ok := m.pool.Get(a); !ok {
				m.unadopted++
			}
		}
		m.unsettled = !nic.Settled()
		if m.unsettled {
			m.settleTries++
			m.reconcileAt = now.Add(min(m.cfg.BackoffMin<<min(m.settleTries-1, 16), m.cfg.BackoffMax))
		}
		m.log.Warn("NIC's last operation has not succeeded; its new ip configurations are not served",
			"provisioningState", nic.ProvisioningState, "notServed", m.unadopted)
		return nil
	}
	m.unsettled, m.settleTries, m.unadopted = false, 0, 0
	foreign := make([]netip.Addr, 0, len(nic.Foreign))
	for _, f := range nic.Foreign {
		if f.Addr.IsValid() {
			foreign = append(foreign, f.Addr)
		}
	}
	r := m.pool.SyncNIC(nic.Secondaries, foreign, now)
	revived := m.reviveAbandonedLocked(now)
	if len(r.Adopted) > 0 {
		m.log.Info("adopted ip configurations", "count", len(r.Adopted))
	}
	for _, a := range r.Missing {
		e, _ := m.pool.Get(a)
		m.log.Error("assigned address vanished from the NIC; the pod keeps it but it no longer routes",
			"addr", a, "containerID", e.Owner.ContainerID, "pod", e.Owner.PodNamespace+"/"+e.Owner.PodName)
		m.publishLocked(eventError, a, "assigned address vanished from the NIC")
		missingTotal.Inc()
	}
	for _, a := range r.Found {
		m.log.Info("missing address is back on the NIC", "addr", a)
	}
	for _, a := range r.Foreign {
		e, _ := m.pool.Get(a)
		m.log.Warn("a pod holds the address of an ip configuration cns did not create (adopted by an older cns); "+
			"it keeps it, and on release the address leaves the pool untouched", "addr", a, "containerID", e.Owner.ContainerID)
	}
	if r.Changed() {
		m.publishLocked(eventReconcile, netip.Addr{}, fmt.Sprintf("NIC differed from the pool: adopted %d, dropped %d, missing %d, found %d, foreign %d",
			len(r.Adopted), len(r.Dropped), len(r.Missing), len(r.Found), len(r.Foreign)))
	}
	return append(r.Dropped, revived...)
}

func (m *Manager) forget(addrs []netip.Addr) {
	if err := m.store.ForgetAddrs(addrs); err != nil {
		m.log.Error("drop records of addresses gone from the NIC", "err", err)
	}
}

func (m *Manager) succeedLocked() {
	m.failures, m.lastErr, m.subnetFull, m.nicFull, m.nextAttempt, m.addCap = 0, nil, false, false, time.Time{}, 0
}

// failLocked records a cloud failure and schedules the next attempt: exponential backoff
// with jitter (a random point in the upper half of the step) capped by BackoffMax, and never
// sooner than the server's Retry-After.
func (m *Manager) failLocked(now time.Time, err error) {
	m.failures++
	m.lastErr, m.lastErrAt = err, now
	m.subnetFull = cloud.KindOf(err) == cloud.KindSubnetFull
	m.nicFull = cloud.KindOf(err) == cloud.KindNICFull
	delay := m.backoffLocked()
	if ra := cloud.RetryAfterOf(err); ra > delay {
		delay = ra
	}
	if cloud.KindOf(err) == cloud.KindConflict && m.failures < 3 {
		delay = 0
	}
	m.nextAttempt = now.Add(delay)
	m.log.Warn("cloud call failed", "err", err, "failures", m.failures, "retryIn", delay.Round(time.Millisecond))
}

func (m *Manager) backoffLocked() time.Duration {
	exp := m.cfg.BackoffMin << min(m.failures-1, 16)
	if exp > m.cfg.BackoffMax || exp <= 0 {
		exp = m.cfg.BackoffMax
	}
	return exp/2 + rand.N(exp/2+1)
}

func (m *Manager) retryDelay() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return max(m.nextAttempt.Sub(m.now()), m.cfg.BackoffMin)
}
