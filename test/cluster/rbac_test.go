package cluster

import (
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	v1 "github.com/vnet-cni/vnet-cni/cns/api/v1alpha1"
)

func TestANodeMayWriteOnlyItsOwnNodeNetworkConfig(t *testing.T) {
	e := newEnv(t, 0)
	e.applyClusterMode(t, "node-rbac.yaml")
	e.bareNode(t, "n1")
	e.bareNode(t, "n2")
	u, err := e.api.env.AddUser(envtest.User{Name: "system:node:n1", Groups: []string{"system:nodes"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := client.New(u.Config(), client.Options{Scheme: e.c.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	patch := func(name string) error {
		o := &v1.NodeNetworkConfig{}
		if err := nc.Get(e.ctx, client.ObjectKey{Name: name}, o); err != nil {
			return err
		}
		want := o.DeepCopy()
		want.Spec.RequestedIPCount = 9
		return nc.Patch(e.ctx, want, client.MergeFrom(o))
	}
	// The policy takes effect asynchronously once created: wait for the first denial.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := patch("n2")
		if err != nil && (apierrors.IsForbidden(err) || apierrors.IsInvalid(err)) && strings.Contains(err.Error(), "only its own") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node n1 patching n2's NodeNetworkConfig: got %v, want denied by the admission policy", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := patch("n1"); err != nil {
		t.Fatalf("node n1 patching its own NodeNetworkConfig: %v", err)
	}
	// Status belongs to the controller: the node is not granted the subresource.
	o := &v1.NodeNetworkConfig{}
	if err := nc.Get(e.ctx, client.ObjectKey{Name: "n1"}, o); err != nil {
		t.Fatal(err)
	}
	st := o.DeepCopy()
	st.Status.AssignedIPCount = 200
	if err := nc.Status().Patch(e.ctx, st, client.MergeFrom(o)); !apierrors.IsForbidden(err) {
		t.Fatalf("node n1 writing its status: got %v, want Forbidden", err)
	}
}

// applyClusterMode applies one of the repo's cluster-mode manifests (cns/deploy/cluster-mode).
func (e *env) applyClusterMode(t *testing.T, name string) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	manifest := filepath.Join(filepath.Dir(file), "..", "..", "cns", "deploy", "cluster-mode", name)
	if out, stderr, err := e.api.env.ControlPlane.KubeCtl().Run("apply", "-f", manifest); err != nil {
		o, _ := io.ReadAll(out)
		se, _ := io.ReadAll(stderr)
		t.Fatalf("kubectl apply %s: %v\n%s%s", manifest, err, o, se)
	}
}
