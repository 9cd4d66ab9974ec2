package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/vnet-cni/vnet-cni/cns/api/v1alpha1"
	"github.com/vnet-cni/vnet-cni/cns/cloud"
	"github.com/vnet-cni/vnet-cni/cns/cloud/crd"
)

// NIC is one node's cloud interface as the controller needs it: the same narrow boundary cns
// consumes in direct mode (cns/cloud/azure implements both).
type NIC interface {
	GetNIC(ctx context.Context) (cloud.NIC, error)
	UpdateIPConfigs(ctx context.Context, ch cloud.Change) (cloud.NIC, error)
}

// NICFactory returns the cloud client of a node's NIC.
type NICFactory func(ctx context.Context, node string) (NIC, error)

// Reconciler applies each NodeNetworkConfig's spec to its node's NIC and reports the NIC in the
// status. The work queue hands a node to one worker at a time, so a node has at most one NIC
// write in flight, and every spec change that arrives meanwhile is folded into the next one.
type Reconciler struct {
	Client       client.Client
	NICs         NICFactory
	MaxIPs       int
	CloudTimeout time.Duration
	Log          *slog.Logger
	Metrics      *Metrics
	Resync       Resync
	Budget       *Budget // the ARM write budget; nil leaves it to the transport alone

	mu       sync.Mutex
	clients  map[string]NIC
	lastRead map[string]time.Time // node → when its NIC was last read
	owners   map[string]string    // lower-case NIC ID → the node that has it
	nicOf    map[string]string    // node → lower-case ID of its NIC
}

var _ reconcile.Reconciler = (*Reconciler)(nil)

// Reconcile makes one node's NIC match its spec: read the NIC, plan, write at most once, report.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	obj := &v1.NodeNetworkConfig{}
	if err := r.Client.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.Name)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	if current(obj) {
		r.Metrics.settled(obj.Name) // answered: a restart, a resync, or our own status write
		if due, wait := r.resyncDue(obj.Name); !due {
			return reconcile.Result{RequeueAfter: wait}, nil
		}
		return r.resync(ctx, obj)
	}
	cctx, cancel := context.WithTimeout(ctx, r.CloudTimeout)
	defer cancel()
	nic, err := r.nic(cctx, obj.Name)
	if err != nil {
		return r.failed(ctx, obj, nil, discoveryError(err))
	}
	now, err := nic.GetNIC(cctx)
	if err != nil {
		return r.failed(ctx, obj, nil, err)
	}
	if other := r.claim(obj.Name, now.ID); other != "" {
		// Two nodes whose provider IDs lead to one NIC: the first keeps it, the other is refused
		// and never written (its addresses would be removed from the first's pods).
		r.drop(obj.Name)
		return r.failed(ctx, obj, nil, rejected(v1.ReasonNICClaimed, fmt.Errorf("NIC %s is already node %s's", now.ID, other)))
	}
	r.readAt(obj.Name, time.Now())
	if strings.EqualFold(now.ProvisioningState, "Updating") {
		// A write is still running (a former leader's, or another tool's): planning now would
		// count its addresses as missing and write them twice.
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	p := PlanFor(obj.Spec, now, r.MaxIPs)
	if !p.Empty() {
		start := time.Now()
		wctx := cctx
		if r.Budget != nil { // queue for the budget here, not inside the SDK's per-try timeout
			waited, err := r.Budget.Wait(cctx)
			r.Metrics.budgetWait.Observe(waited.Seconds())
			if err != nil {
				return r.failed(ctx, obj, &now, &cloud.Error{Kind: cloud.KindThrottled, Err: err})
			}
			wctx = WithTicket(cctx)
		}
		written, err := nic.UpdateIPConfigs(wctx, cloud.Change{ETag: now.ETag, Snapshot: now.Snapshot, Add: p.Add, Remove: p.Remove})
		r.Metrics.write(err, time.Since(start))
		if err != nil {
			r.Log.Warn("NIC write failed", "node", obj.Name, "add", p.Add, "remove", len(p.Remove), "err", err)
			return r.failed(ctx, obj, &now, err)
		}
		r.Log.Debug("NIC written", "node", obj.Name, "generation", obj.Generation, "add", p.Add, "remove", len(p.Remove))
		now = written
	}
	if err := r.report(ctx, obj, &now, nil); err != nil {
		return reconcile.Result{}, err
	}
	return r.nextResync(), nil
}

// discoveryError classifies a failure to find a node's NIC: one time may mend (ARM or the API
// server unreachable or throttling, no provider ID yet) stays pending; any other (a foreign
// or refused provider ID, the VM or NIC not found) is final, as NICNotFound unless it says why.
func discoveryError(err error) error {
	var ce *cloud.Error
	if !errors.As(err, &ce) {
		return rejected(v1.ReasonNICNotFound, err)
	}
	switch {
	case ce.Kind == cloud.KindThrottled || ce.Kind == cloud.KindUnavailable || ce.Kind == cloud.KindBusy:
		return err
	case ce.Kind == cloud.KindRejected && (ce.Code == v1.ReasonNICNotFound || ce.Code == v1.ReasonNICClaimed):
		return err
	}
	return rejected(v1.ReasonNICNotFound, err)
}

// current reports whether the status already answers the spec's generation successfully.
func current(o *v1.NodeNetworkConfig) bool {
	return o.Status.ObservedGeneration == o.Generation && o.Status.NIC.ID != "" &&
		meta.IsStatusConditionTrue(o.Status.Conditions, v1.ConditionReady)
}

// failed reports err. A failure the node must act on (subnet or NIC full, rejected, failed)
// finishes the generation with a reason; one that time mends (throttled, unavailable, busy,
// conflict) leaves the generation pending. Both are retried: the former with the work queue's
// backoff, the latter after the server's Retry-After when it gave one.
func (r *Reconciler) failed(ctx context.Context, obj *v1.NodeNetworkConfig, nic *cloud.NIC, err error) (reconcile.Result, error) {
	if rerr := r.report(ctx, obj, nic, err); rerr != nil {
		return reconcile.Result{}, rerr
	}
	switch cloud.KindOf(err) {
	case cloud.KindConflict:
		return reconcile.Result{Requeue: true}, nil
	case cloud.KindThrottled, cloud.KindBusy:
		if ra := cloud.RetryAfterOf(err); ra > 0 {
			return reconcile.Result{RequeueAfter: ra}, nil
		}
	}
	return reconcile.Result{}, err
}

// report writes the status: the NIC (when known), the generation it answers, the conditions.
// obj may come from a stale cache, so the patch carries its resourceVersion (optimistic lock):
// a merge patch computed against an old status would leave fields it thinks are already
// gone (a last error, a foreign configuration) in place. On conflict it re-reads and retries.
func (r *Reconciler) report(ctx context.Context, obj *v1.NodeNetworkConfig, nic *cloud.NIC, cerr error) error {
	gen, base, answered := obj.Generation, obj, false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if base == nil {
			base = &v1.NodeNetworkConfig{}
			if err := r.Client.Get(ctx, client.ObjectKeyFromObject(obj), base); err != nil {
				return err
			}
		}
		st := r.status(base, gen, nic, cerr)
		answered = st.Status.ObservedGeneration == gen
		err := r.Client.Status().Patch(ctx, st, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
		base = nil
		return err
	})
	if err != nil {
		return fmt.Errorf("write status of NodeNetworkConfig %s: %w", obj.Name, err)
	}
	if answered {
		r.Metrics.answered(obj.Name, gen)
	}
	return nil
}

func transientKind(k cloud.Kind) bool {
	return k == cloud.KindThrottled || k == cloud.KindUnavailable || k == cloud.KindBusy || k == cloud.KindConflict
}

// status is obj with its status answering generation gen with nic and cerr.
func (r *Reconciler) status(obj *v1.NodeNetworkConfig, gen int64, nic *cloud.NIC, cerr error) *v1.NodeNetworkConfig {
	st := obj.DeepCopy()
	s := &st.Status
	if nic != nil {
		fillNIC(s, *nic, r.MaxIPs)
	}
	s.FreeIPCount = max(0, s.AssignedIPCount-obj.Spec.InUseIPCount)
	kind := cloud.KindOf(cerr)
	transient := cerr != nil && transientKind(kind)
	set := func(typ string, ok bool, reason, msg string) {
		st := metav1.ConditionFalse
		if ok {
			st = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: typ, Status: st, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	switch {
	case cerr == nil:
		s.ObservedGeneration, s.LastError = gen, ""
		set(v1.ConditionReady, true, v1.ReasonApplied, fmt.Sprintf("the NIC holds %d secondary addresses", s.AssignedIPCount))
		set(v1.ConditionSubnetFull, false, v1.ReasonApplied, "")
		set(v1.ConditionThrottled, false, v1.ReasonApplied, "")
	case transient:
		s.LastError = cerr.Error()
		reason := v1.ReasonPending
		if code(cerr) == v1.ReasonProviderIDNotSet {
			reason = v1.ReasonProviderIDNotSet
		}
		set(v1.ConditionReady, false, reason, "waiting to retry: "+cerr.Error())
		set(v1.ConditionThrottled, kind == cloud.KindThrottled, crd.Reason(kind), cerr.Error())
	default:
		reason := crd.Reason(kind)
		if c := code(cerr); c == v1.ReasonNICNotFound || c == v1.ReasonNICClaimed {
			reason = c
		}
		s.ObservedGeneration, s.LastError = gen, cerr.Error()
		set(v1.ConditionReady, false, reason, cerr.Error())
		set(v1.ConditionSubnetFull, kind == cloud.KindSubnetFull, reason, cerr.Error())
		set(v1.ConditionThrottled, false, reason, "")
	}
	return st
}

func code(err error) string {
	var ce *cloud.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return ""
}

func fillNIC(s *v1.NodeNetworkConfigStatus, nic cloud.NIC, maxIPs int) {
	s.NIC = v1.NIC{ID: nic.ID, ETag: nic.ETag, ProvisioningState: nic.ProvisioningState}
	s.Subnet, s.Primary, s.Gateway = nic.Subnet.String(), nic.Primary.String(), ""
	if nic.Subnet.IsValid() {
		s.Gateway = nic.Subnet.Masked().Addr().Next().String() // Azure's gateway: the subnet's first host
	}
	s.IPConfigurations = s.IPConfigurations[:0]
	for _, a := range nic.Secondaries {
		s.IPConfigurations = append(s.IPConfigurations, v1.IPConfiguration{Name: nic.Names[a], Address: a.String()})
	}
	s.ForeignIPConfigurations = s.ForeignIPConfigurations[:0]
	for _, f := range nic.Foreign {
		fc := v1.ForeignIPConfiguration{Name: f.Name}
		if f.Addr.IsValid() {
			fc.Address = f.Addr.String()
		}
		s.ForeignIPConfigurations = append(s.ForeignIPConfigurations, fc)
	}
	s.AssignedIPCount = int32(len(nic.Secondaries))
	s.Scaler.MaxIPCount = int32(maxIPs)
}

func (r *Reconciler) nic(ctx context.Context, node string) (NIC, error) {
	r.mu.Lock()
	c, ok := r.clients[node]
	r.mu.Unlock()
	if ok {
		return c, nil
	}
	// Discovery reads ARM: not under the lock. The work queue never runs one node twice at once.
	c, err := r.NICs(ctx, node)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.clients == nil {
		r.clients = map[string]NIC{}
	}
	r.clients[node] = c
	return c, nil
}

// claim records that node's NIC is nicID and returns the other node that already has it,
// if any (then nothing is recorded).
func (r *Reconciler) claim(node, nicID string) string {
	key := strings.ToLower(nicID)
	r.mu.Lock()
	defer r.mu.Unlock()
	if other, ok := r.owners[key]; ok && other != node {
		return other
	}
	if r.owners == nil {
		r.owners, r.nicOf = map[string]string{}, map[string]string{}
	}
	if old, ok := r.nicOf[node]; ok && old != key {
		delete(r.owners, old)
	}
	r.owners[key], r.nicOf[node] = node, key
	return ""
}

// drop forgets node's NIC client, so the next reconcile discovers it again.
func (r *Reconciler) drop(node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.clients, node)
}

func (r *Reconciler) forget(node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.clients, node)
	delete(r.lastRead, node)
	if key, ok := r.nicOf[node]; ok {
		delete(r.owners, key)
		delete(r.nicOf, node)
	}
}
