package controller

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"golang.org/x/time/rate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/vnet-cni/vnet-cni/cns/api/v1alpha1"
)

// Drift: a NIC changed out of band (an operator's tool, a portal edit, a former leader's write
// whose status was never reported) must show up in the node's status, where its cns reads it.
// So every node whose status answers its spec has its NIC re-read about once per Resync
// period, jittered so that a thousand nodes do not read at once, and through a read budget of
// its own, so that resyncs never crowd out the reads of spec changes. A drift read only
// reports: writes follow spec changes alone (a lost address cannot be given back by adding
// another, and the node decides what it needs).

// Resync configures the periodic re-read of every NIC.
type Resync struct {
	Period time.Duration // about how often each NIC is re-read; 0 turns drift reads off
	Reads  *rate.Limiter // budget of drift reads, cluster-wide
}

// jittered is d scaled by a random factor in [0.8, 1.2).
func jittered(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// nextResync is the Result that brings node back for its next drift read.
func (r *Reconciler) nextResync() reconcile.Result {
	if r.Resync.Period <= 0 {
		return reconcile.Result{}
	}
	return reconcile.Result{RequeueAfter: jittered(r.Resync.Period)}
}

// readAt notes that node's NIC was read now.
func (r *Reconciler) readAt(node string, t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastRead == nil {
		r.lastRead = map[string]time.Time{}
	}
	r.lastRead[node] = t
}

// resyncDue says whether node's NIC is due a drift read, and otherwise how long until it is.
// A node this instance has never read (a controller that just started, a new leader) gets a
// random point in the period, so a restart does not read every NIC at once.
func (r *Reconciler) resyncDue(node string) (bool, time.Duration) {
	if r.Resync.Period <= 0 {
		return false, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	last, ok := r.lastRead[node]
	if !ok {
		if r.lastRead == nil {
			r.lastRead = map[string]time.Time{}
		}
		wait := time.Duration(rand.Int64N(int64(r.Resync.Period)))
		r.lastRead[node] = time.Now().Add(wait - r.Resync.Period)
		return false, wait
	}
	if since := time.Since(last); since < r.Resync.Period*8/10 {
		return false, jittered(r.Resync.Period - since)
	}
	return true, 0
}

// resync re-reads the NIC of a node whose status answers its spec, and reports it when it
// changed. Out of read budget, it comes back when the budget has a read for it.
func (r *Reconciler) resync(ctx context.Context, obj *v1.NodeNetworkConfig) (reconcile.Result, error) {
	if res := r.Resync.Reads.Reserve(); res.Delay() > 0 {
		d := res.Delay()
		res.Cancel()
		return reconcile.Result{RequeueAfter: d + time.Duration(rand.Int64N(int64(time.Second)))}, nil
	}
	cctx, cancel := context.WithTimeout(ctx, r.CloudTimeout)
	defer cancel()
	nic, err := r.nic(cctx, obj.Name)
	if err != nil {
		return r.nextResync(), nil // discovery worked for the write; it is retried next period
	}
	now, err := nic.GetNIC(cctx)
	r.Metrics.resyncRead(err)
	if err != nil {
		r.Log.Debug("drift read failed", "node", obj.Name, "err", err)
		return r.nextResync(), nil
	}
	r.readAt(obj.Name, time.Now())
	if other := r.claim(obj.Name, now.ID); other != "" {
		r.drop(obj.Name)
		return r.failed(ctx, obj, nil, rejected(v1.ReasonNICClaimed, fmt.Errorf("NIC %s is already node %s's", now.ID, other)))
	}
	if now.ETag == obj.Status.NIC.ETag && now.ProvisioningState == obj.Status.NIC.ProvisioningState {
		return r.nextResync(), nil
	}
	r.Metrics.drifted()
	r.Log.Info("NIC changed out of band; status updated", "node", obj.Name, "etag", now.ETag, "was", obj.Status.NIC.ETag)
	if err := r.report(ctx, obj, &now, nil); err != nil {
		return reconcile.Result{}, err
	}
	return r.nextResync(), nil
}
