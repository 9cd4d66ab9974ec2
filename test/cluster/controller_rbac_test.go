package cluster

import (
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/vnet-cni/vnet-cni/test/stack"
)

// The controller's manifest grants it enough to elect a leader on its Lease and apply a node,
// and no more than that Lease in kube-system: running it as its ServiceAccount proves the first.
func TestControllerRBACOfTheManifestIsItsLeaseAndNoOtherLease(t *testing.T) {
	e := newEnv(t, 0)
	e.applyClusterMode(t, "controller.yaml")
	u, err := e.api.env.AddUser(envtest.User{Name: "system:serviceaccount:kube-system:vnet-controller",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:kube-system"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.mock.ControllerConfig()
	cfg.LeaseNamespace = "kube-system"
	ctl := StartController(t, u.Config(), cfg, stack.Quiet(t))
	select {
	case <-ctl.Elected:
	case <-time.After(time.Minute):
		t.Fatal("the controller's ServiceAccount did not win the election within a minute")
	}
	e.bareNode(t, "n1")
	e.applied(t, "n1", e.spec(t, "n1", 2))
	// Other Leases in kube-system (the scheduler's, the controller manager's) are not its own.
	sc, err := client.New(u.Config(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.List(e.ctx, &coordv1.LeaseList{}, client.InNamespace("kube-system")); !apierrors.IsForbidden(err) {
		t.Fatalf("listing kube-system's Leases: %v, want Forbidden", err)
	}
	other := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-scheduler"}}
	if err := e.c.Create(e.ctx, other); err != nil {
		t.Fatal(err)
	}
	other.Spec.HolderIdentity = ptr.To("vnet-controller")
	if err := sc.Update(e.ctx, other); !apierrors.IsForbidden(err) {
		t.Fatalf("taking the scheduler's Lease: %v, want Forbidden", err)
	}
}
