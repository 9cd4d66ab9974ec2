package cns

import (
	"context"
	"time"

	"github.com/vnet-cni/vnet-cni/ipampool"
)

// apiGC releases allocations whose pod the API server no longer has, or has under another
// UID (deleted and recreated with the same name), for runtimes that never call CNI DEL or
// GC. Safety rules, in order:
//   - nothing is judged before the informer has synced;
//   - the informer cache only nominates: an allocation becomes a candidate when its pod is
//     missing from the cache, and must stay one for the whole grace period;
//   - before releasing, a live GET (a quorum read from the API server, not the cache)
//     confirms the pod is gone or another; any error of that GET keeps the allocation.
//
// So a stale cache or a failed watch can delay garbage collection, never cause a release.
// Allocations without a pod name (not from Kubernetes) are left to CNI DEL and GC.
type apiGC struct {
	m     *Manager
	pods  PodSource
	grace time.Duration
	since map[ipampool.Key]time.Time // first seen missing from the cache
}

func newAPIGC(m *Manager, pods PodSource, grace time.Duration) *apiGC {
	return &apiGC{m: m, pods: pods, grace: grace, since: make(map[ipampool.Key]time.Time)}
}

// run checks every grace/4 (between 100 ms and 15 s) until ctx ends.
func (g *apiGC) run(ctx context.Context) {
	every := min(max(g.grace/4, 100*time.Millisecond), 15*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.round(ctx, time.Now())
		}
	}
}

// round makes one pass and returns how many allocations it released.
func (g *apiGC) round(ctx context.Context, now time.Time) (released int) {
	if _, _, synced := g.pods.Snapshot(); !synced {
		return 0
	}
	g.m.mu.Lock()
	entries := g.m.pool.Entries()
	g.m.mu.Unlock()
	owned := make(map[ipampool.Key]bool, len(entries))
	for _, e := range entries {
		o := e.Owner
		if e.State != ipampool.Assigned || o.PodName == "" {
			continue
		}
		owned[o.Key] = true
		if p, ok := g.pods.Cached(o.PodNamespace, o.PodName); ok && p.Is(o.PodUID) {
			delete(g.since, o.Key)
			continue
		}
		first, seen := g.since[o.Key]
		if !seen {
			g.since[o.Key] = now
			continue
		}
		if now.Sub(first) < g.grace {
			continue
		}
		p, found, err := g.pods.Live(ctx, o.PodNamespace, o.PodName)
		if err != nil {
			g.m.log.Warn("pod GC: cannot confirm with the API server; keeping the allocation", "pod", o.PodNamespace+"/"+o.PodName, "err", err)
			continue
		}
		if found && p.Is(o.PodUID) {
			delete(g.since, o.Key) // the cache lagged
			continue
		}
		ok, err := g.m.ReleaseNetworkIP(ctx, o.Key, o.Network)
		if err != nil {
			g.m.log.Error("pod GC: release", "addr", e.Addr, "err", err)
			continue
		}
		delete(g.since, o.Key)
		if ok {
			released++
			g.m.log.Info("pod GC: released the address of a pod the API server no longer has", "addr", e.Addr,
				"pod", o.PodNamespace+"/"+o.PodName, "uid", o.PodUID, "recreatedAs", p.UID, "absentFor", now.Sub(first).Round(time.Millisecond))
		}
	}
	for k := range g.since {
		if !owned[k] {
			delete(g.since, k)
		}
	}
	return released
}
