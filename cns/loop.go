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

// step makes the pool's next move: expire cooldowns, re-read the NIC when due, then at most
// one NIC write.
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
	if now.Before(m.nextAttempt) {
		m.mu.Unlock()
		return
	}
	ch, fresh := m.decideLocked(now)
	if ch == nil {
		m.mu.Unlock()
		return
	}
	m.inflight, m.inflightAt = ch, now
	m.pool.SetPending(ch.Add)
	m.mu.Unlock()

	if len(fresh) > 0 {
		if err := m.store.MarkPendingRelease(fresh); err != nil {
			m.log.Error("persist pending release; not releasing", "err", err)
			m.mu.Lock()
			m.pool.CancelRelease(fresh, now)
			m.inflight = nil
			m.mu.Unlock()
			return
		}
	}
	m.write(ctx, ch)
}

// decideLocked turns the policy's decision into a NIC change. Addresses left PendingRelease
// by a failed write or a restart are removed first: they are never handed out again.
func (m *Manager) decideLocked(now time.Time) (ch *cloud.Change, freshRelease []netip.Addr) {
	if pr := m.pool.PendingReleases(); len(pr) > 0 {
		return &cloud.Change{ETag: m.nicState.ETag, Remove: pr}, nil
	}
	demand, hold := m.demandLocked(now)
	d := ipampool.Decide(m.pool.Counts(), demand, m.cfg.Limits)
	if d.Add > 0 && hold > 0 {
		m.demandWake = now.Add(hold) // a burst of bound pods is still arriving
		return nil, nil
	}
	m.demandWake, m.demandSince = time.Time{}, time.Time{}
	switch {
	case d.Add > 0:
		if m.addCap > 0 {
			d.Add = min(d.Add, m.addCap)
		}
		return &cloud.Change{ETag: m.nicState.ETag, Add: d.Add}, nil
	case d.Release > 0:
		c := m.pool.ReleaseCandidates(now, m.cfg.Limits.ReleaseDelay, d.Release)
		if len(c) == 0 {
			return nil, nil
		}
		if err := m.pool.MarkRelease(c, now); err != nil {
			m.log.Error("mark release", "err", err)
			return nil, nil
		}
		return &cloud.Change{ETag: m.nicState.ETag, Remove: c}, c
	}
	return nil, nil
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
		switch cloud.KindOf(err) {
		case cloud.KindConflict:
			m.reconcileAt = now // stale view: re-read before deciding again
		case cloud.KindSubnetFull:
			// Azure fails the whole write when the subnet cannot hold all of it; ask for
			// half at once. Only a write of one failing means the subnet is full.
			if ch.Add > 1 {
				m.addCap, m.subnetFull, m.nextAttempt = ch.Add/2, false, now
			}
		}
		m.notifyLocked()
		m.mu.Unlock()
		m.publish(eventError, netip.Addr{}, err.Error())
		return
	}
	m.succeedLocked()
	forget := m.applyNICLocked(nic, now)
	m.notifyLocked()
	c := m.pool.Counts()
	m.mu.Unlock()

	m.forget(forget)
	if ch.Add > 0 {
		m.log.Info("scaled up", "added", ch.Add, "available", c.Available, "assigned", c.Assigned, "took", time.Since(start).Round(time.Millisecond))
		m.publish(eventScaleUp, netip.Addr{}, fmt.Sprintf("added %d ip configurations", ch.Add))
	} else {
		m.log.Info("scaled down", "removed", len(ch.Remove), "available", c.Available, "assigned", c.Assigned)
		m.publish(eventScaleDown, netip.Addr{}, fmt.Sprintf("removed %d ip configurations", len(ch.Remove)))
	}
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
		m.notifyLocked()
		m.mu.Unlock()
		return err
	}
	if m.lastErr != nil && m.inflight == nil && cloud.KindOf(m.lastErr) != cloud.KindSubnetFull {
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
// should drop (gone from the NIC).
func (m *Manager) applyNICLocked(nic cloud.NIC, now time.Time) []netip.Addr {
	m.nicState = nic
	r := m.pool.SyncNIC(nic.Secondaries, now)
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
	if r.Changed() {
		m.publishLocked(eventReconcile, netip.Addr{}, fmt.Sprintf("NIC differed from the pool: adopted %d, dropped %d, missing %d, found %d",
			len(r.Adopted), len(r.Dropped), len(r.Missing), len(r.Found)))
	}
	return r.Dropped
}

func (m *Manager) forget(addrs []netip.Addr) {
	if err := m.store.ForgetAddrs(addrs); err != nil {
		m.log.Error("drop records of addresses gone from the NIC", "err", err)
	}
}

func (m *Manager) succeedLocked() {
	m.failures, m.lastErr, m.subnetFull, m.nextAttempt, m.addCap = 0, nil, false, time.Time{}, 0
}

// failLocked records a cloud failure and schedules the next attempt: exponential backoff
// with jitter (a random point in the upper half of the step) capped by BackoffMax, and never
// sooner than the server's Retry-After.
func (m *Manager) failLocked(now time.Time, err error) {
	m.failures++
	m.lastErr, m.lastErrAt = err, now
	m.subnetFull = cloud.KindOf(err) == cloud.KindSubnetFull
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
