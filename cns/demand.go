package cns

import (
	"cmp"
	"context"
	"time"

	"github.com/vnet-cni/vnet-cni/cns/k8s"
	"github.com/vnet-cni/vnet-cni/ipampool"
)

// PodSource is the API server's view of the pods bound to this node. Implementation:
// cns/k8s.Pods (a client-go informer).
type PodSource interface {
	// Snapshot returns the node's pod-network pods that have not terminated, when that set
	// last changed, and whether the view has synced (if not, the list means nothing).
	Snapshot() (pods []k8s.Pod, changed time.Time, synced bool)
	// Cached returns a pod from the informer's cache.
	Cached(namespace, name string) (k8s.Pod, bool)
	// Live reads a pod from the API server itself, bounded by its own deadline.
	Live(ctx context.Context, namespace, name string) (k8s.Pod, bool, error)
}

var _ PodSource = (*k8s.Pods)(nil)

// A burst of pods is bound one API event at a time. Growth for bound pods alone (no request
// waiting yet) waits until the events have paused for the settle window, and at most the
// hold, so that one NIC write covers the whole burst instead of its first pod. A request
// that finds the pool empty never waits for this: waiters are served at once. A pause in a
// burst longer than the window (a loaded API server, kubelet or cns) splits it into two
// writes: safe, one write more.
const (
	defaultDemandSettle = 100 * time.Millisecond
	defaultDemandHold   = time.Second
)

// UsePods makes the pods bound to this node count as demand. Call before Run.
func (m *Manager) UsePods(p PodSource) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pods = p
}

// demandLocked returns the pods bound to the node that hold no address yet (the policy
// serves the larger of them and the requests waiting: a waiting request is usually one of
// those pods), and how long to hold a growth that only the bound pods call for while their
// burst is still arriving. in is the policy's input without them.
func (m *Manager) demandLocked(now time.Time, in ipampool.Input) (bound int, hold time.Duration) {
	if m.pods == nil {
		return 0, 0
	}
	pods, changed, synced := m.pods.Snapshot()
	if !synced {
		return 0, 0
	}
	bound = unplaced(pods, m.pool.Entries())
	if bound <= in.Waiters {
		m.demandSince = time.Time{}
		return bound, 0
	}
	if ipampool.Decide(in).Add > 0 {
		return bound, 0 // growing anyway: size the write for the bound pods too
	}
	if m.demandSince.IsZero() {
		m.demandSince = now
	}
	settle, holdMax := cmp.Or(m.cfg.DemandSettle, defaultDemandSettle), cmp.Or(m.cfg.DemandHold, defaultDemandHold)
	quiet := changed.Add(settle).Sub(now)
	if quiet > 0 && now.Sub(m.demandSince) < holdMax {
		return bound, quiet
	}
	return bound, 0
}

// unplaced counts the pods that no assigned address belongs to. An allocation names its pod
// by UID when the runtime passed K8S_POD_UID, else by namespace/name.
func unplaced(pods []k8s.Pod, entries []ipampool.Entry) int {
	type nsName struct{ ns, name string }
	byUID := make(map[string]bool)
	byName := make(map[nsName]bool)
	for _, e := range entries {
		if e.State != ipampool.Assigned || e.Owner.PodName == "" {
			continue
		}
		if e.Owner.PodUID != "" {
			byUID[e.Owner.PodUID] = true
		} else {
			byName[nsName{e.Owner.PodNamespace, e.Owner.PodName}] = true
		}
	}
	n := 0
	for _, p := range pods {
		if byUID[p.UID] || p.MirrorOf != "" && byUID[p.MirrorOf] || byName[nsName{p.Namespace, p.Name}] {
			continue
		}
		n++
	}
	return n
}
