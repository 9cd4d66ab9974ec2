package controller

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/vnet-cni/vnet-cni/cns/api/v1alpha1"
	"github.com/vnet-cni/vnet-cni/cns/cloud"
	"github.com/vnet-cni/vnet-cni/cns/cloud/crd"
)

// fakeNIC is one NIC in memory; several nodes may be handed the same one.
type fakeNIC struct {
	mu     sync.Mutex
	nic    cloud.NIC
	writes int
	last   cloud.Change // the latest write's
}

func (f *fakeNIC) GetNIC(context.Context) (cloud.NIC, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nic, nil
}

func (f *fakeNIC) UpdateIPConfigs(_ context.Context, ch cloud.Change) (cloud.NIC, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	f.last = ch
	next := f.nic.Secondaries[len(f.nic.Secondaries)-1].Next()
	for range ch.Add {
		f.nic.Secondaries = append(f.nic.Secondaries, next)
		next = next.Next()
	}
	return f.nic, nil
}

func newNNC(name string, requested int32) *v1.NodeNetworkConfig {
	o := &v1.NodeNetworkConfig{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1}}
	o.Spec.RequestedIPCount = requested
	return o
}

func testReconciler(t *testing.T, nics NICFactory, objs ...client.Object) (*Reconciler, client.Client) {
	t.Helper()
	c := fake.NewClientBuilder().WithScheme(crd.Scheme()).WithStatusSubresource(&v1.NodeNetworkConfig{}).WithObjects(objs...).Build()
	return &Reconciler{Client: c, NICs: nics, MaxIPs: 16, CloudTimeout: time.Minute, Log: slog.New(slog.DiscardHandler),
		Metrics: NewMetrics(prometheus.NewRegistry(), nil)}, c
}

func reconcileNode(t *testing.T, r *Reconciler, c client.Client, name string) (*v1.NodeNetworkConfig, error) {
	t.Helper()
	_, err := r.Reconcile(t.Context(), reconcile.Request{NamespacedName: types.NamespacedName{Name: name}})
	o := &v1.NodeNetworkConfig{}
	if gerr := c.Get(t.Context(), types.NamespacedName{Name: name}, o); gerr != nil {
		t.Fatal(gerr)
	}
	return o, err
}

// The write is made on the view the reconcile has just read: the change carries that view's
// snapshot, so the cloud backend does not read the NIC a second time.
func TestTheWriteCarriesTheSnapshotOfTheReadBeforeIt(t *testing.T) {
	nic := &fakeNIC{nic: cloud.NIC{ID: "/nic/a", ETag: "e1", ProvisioningState: "Succeeded", Snapshot: "e1 as read",
		Primary: netip.MustParseAddr("10.0.0.4"), Subnet: netip.MustParsePrefix("10.0.0.0/16"), Secondaries: addrs("10.0.0.5")}}
	r, c := testReconciler(t, func(context.Context, string) (NIC, error) { return nic, nil }, newNNC("a", 3))
	if _, err := reconcileNode(t, r, c, "a"); err != nil {
		t.Fatal(err)
	}
	if nic.writes != 1 || nic.last.ETag != "e1" || nic.last.Snapshot != "e1 as read" {
		t.Fatalf("%d writes, the last on etag %q with snapshot %v", nic.writes, nic.last.ETag, nic.last.Snapshot)
	}
}

// Two nodes whose provider IDs lead to one NIC: the second is refused, never written.
func TestANICAnotherNodeHasIsNeverWritten(t *testing.T) {
	shared := &fakeNIC{nic: cloud.NIC{ID: "/nic/a", ETag: "e1", ProvisioningState: "Succeeded",
		Primary: netip.MustParseAddr("10.0.0.4"), Subnet: netip.MustParsePrefix("10.0.0.0/16"), Secondaries: addrs("10.0.0.5")}}
	r, c := testReconciler(t, func(context.Context, string) (NIC, error) { return shared, nil }, newNNC("a", 2), newNNC("b", 4))
	if o, err := reconcileNode(t, r, c, "a"); err != nil || !meta.IsStatusConditionTrue(o.Status.Conditions, v1.ConditionReady) {
		t.Fatalf("node a: %v, conditions %+v", err, o.Status.Conditions)
	}
	writes := shared.writes
	o, _ := reconcileNode(t, r, c, "b")
	cond := meta.FindStatusCondition(o.Status.Conditions, v1.ConditionReady)
	if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != v1.ReasonNICClaimed {
		t.Fatalf("node b Ready %+v, want False/%s", cond, v1.ReasonNICClaimed)
	}
	if shared.writes != writes || o.Status.NIC.ID != "" {
		t.Fatalf("node b: %d writes to node a's NIC, status NIC %q", shared.writes-writes, o.Status.NIC.ID)
	}
	// Once a's config is gone, b may have it.
	r.forget("a")
	if o, err := reconcileNode(t, r, c, "b"); err != nil || !meta.IsStatusConditionTrue(o.Status.Conditions, v1.ConditionReady) {
		t.Fatalf("node b after a left: %v, conditions %+v", err, o.Status.Conditions)
	}
}

// A Node without a provider ID yet (or an API server that cannot be read) is retried and
// its generation left unanswered.
func TestAMissingProviderIDIsRetriedNotAnswered(t *testing.T) {
	notYet := &cloud.Error{Kind: cloud.KindUnavailable, Code: v1.ReasonProviderIDNotSet}
	r, c := testReconciler(t, func(context.Context, string) (NIC, error) { return nil, notYet }, newNNC("a", 2))
	o, err := reconcileNode(t, r, c, "a")
	if err == nil {
		t.Fatal("no error: the work queue would not retry with backoff")
	}
	cond := meta.FindStatusCondition(o.Status.Conditions, v1.ConditionReady)
	if o.Status.ObservedGeneration == o.Generation || cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != v1.ReasonProviderIDNotSet {
		t.Fatalf("observed generation %d of %d, Ready %+v; want unanswered, False/%s", o.Status.ObservedGeneration, o.Generation, cond, v1.ReasonProviderIDNotSet)
	}
}

// A status written from a stale cached object must not leave behind what the newer status
// held: the patch is refused (resourceVersion) and redone from a fresh read.
func TestAStatusFromAStaleCacheIsRedoneNotMerged(t *testing.T) {
	nic := &fakeNIC{nic: cloud.NIC{ID: "/nic/a", ETag: "e1", ProvisioningState: "Succeeded",
		Primary: netip.MustParseAddr("10.0.0.4"), Subnet: netip.MustParsePrefix("10.0.0.0/16"), Secondaries: addrs("10.0.0.5")}}
	r, c := testReconciler(t, func(context.Context, string) (NIC, error) { return nic, nil }, newNNC("a", 1))
	stale := &v1.NodeNetworkConfig{}
	if err := c.Get(t.Context(), types.NamespacedName{Name: "a"}, stale); err != nil {
		t.Fatal(err)
	}
	// Since the cache's copy, an earlier report listed a foreign configuration and an error.
	cur := stale.DeepCopy()
	cur.Status.LastError = "cloud unavailable: earlier"
	cur.Status.ForeignIPConfigurations = []v1.ForeignIPConfiguration{{Name: "web", Address: "10.0.0.9"}}
	if err := c.Status().Update(t.Context(), cur); err != nil {
		t.Fatal(err)
	}
	servedStale := false
	r.Client = interceptor.NewClient(c.(client.WithWatch), interceptor.Funcs{Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		if o, ok := obj.(*v1.NodeNetworkConfig); ok && !servedStale {
			servedStale = true
			stale.DeepCopyInto(o)
			return nil
		}
		return cl.Get(ctx, key, obj, opts...)
	}})
	o, err := reconcileNode(t, r, c, "a")
	if err != nil || !meta.IsStatusConditionTrue(o.Status.Conditions, v1.ConditionReady) {
		t.Fatalf("%v, conditions %+v", err, o.Status.Conditions)
	}
	if o.Status.LastError != "" || len(o.Status.ForeignIPConfigurations) != 0 {
		t.Fatalf("stale fields left behind: last error %q, foreign %+v", o.Status.LastError, o.Status.ForeignIPConfigurations)
	}
}
