package k8s

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnet-cni/vnet-cni/cns"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	"github.com/vnet-cni/vnet-cni/test/stack"
)

// cnsKubeconfig applies the repository's RBAC and returns a kubeconfig authenticated as the
// cns ServiceAccount, so tests run cns with exactly the permissions the manifests grant.
func cnsKubeconfig(t *testing.T, ctx context.Context, cp *ControlPlane) string {
	t.Helper()
	if _, err := cp.Kubectl(ctx, "apply", "-f", filepath.Join(repoDeploy(t), "rbac.yaml")); err != nil {
		t.Fatal(err)
	}
	kc, err := cp.Kubeconfig("cns", "system:serviceaccount:kube-system:cns", "system:serviceaccounts", "system:serviceaccounts:kube-system")
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

func repoDeploy(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "cns", "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func bindPod(t *testing.T, ctx context.Context, cp *ControlPlane, ns, name, node string) string {
	t.Helper()
	p, err := cp.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "pause"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return string(p.UID)
}

// deletePod removes a pod at once, as kubelet's final delete does (no kubelet here).
func deletePod(t *testing.T, ctx context.Context, cp *ControlPlane, ns, name string) {
	t.Helper()
	if err := cp.Client.CoreV1().Pods(ns).Delete(ctx, name, *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
}

// Pods deleted in the API server while the runtime never calls DEL or GC get their addresses
// back after the grace period; a pod recreated under the same name (new UID) is not taken
// for the old one, in either direction; allocations of live pods and of non-Kubernetes
// owners are kept. cns runs with the manifests' least RBAC.
func TestPodsGoneFromAPIServerGetAddressesBackAfterGrace(t *testing.T) {
	cp := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const node, ns = "gc-node", "gc"
	kc := cnsKubeconfig(t, ctx, cp)
	if err := cp.Namespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	s := stack.Start(t, stack.Options{Config: func(c *cns.Config) {
		c.Kube.Kubeconfig, c.Kube.NodeName, c.Kube.GCGrace, c.Kube.Timeout = kc, node, time.Second, 5*time.Second
	}})
	request := func(cid, pod, uid string) {
		t.Helper()
		if _, err := s.IPAM.RequestIPs(ctx, &cnsv1.RequestIPsRequest{ContainerId: cid, Ifname: "eth0",
			PodNamespace: ns, PodName: pod, PodUid: uid}); err != nil {
			t.Fatalf("RequestIPs %s: %v", cid, err)
		}
	}
	held := func() map[string]bool {
		m := map[string]bool{}
		for _, a := range s.Allocations() {
			m[a.GetContainerId()] = true
		}
		return m
	}
	waitReleased := func(cids ...string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			h, gone := held(), 0
			for _, c := range cids {
				if !h[c] {
					gone++
				}
			}
			if gone == len(cids) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("allocations %v not all released within 30 s; held: %v", cids, h)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	request("c-gone", "gone", bindPod(t, ctx, cp, ns, "gone", node))
	request("c-old", "recreated", bindPod(t, ctx, cp, ns, "recreated", node))
	request("c-kept", "kept", bindPod(t, ctx, cp, ns, "kept", node))
	if _, err := s.Request(ctx, "c-no-pod"); err != nil { // not from Kubernetes: left to CNI DEL/GC
		t.Fatal(err)
	}
	deletePod(t, ctx, cp, ns, "gone")
	deletePod(t, ctx, cp, ns, "recreated")
	request("c-new", "recreated", bindPod(t, ctx, cp, ns, "recreated", node))

	waitReleased("c-gone", "c-old")
	h := held()
	for _, c := range []string{"c-kept", "c-no-pod", "c-new"} {
		if !h[c] {
			t.Errorf("%s lost its address; only pods gone from the API server should", c)
		}
	}

	// c-new has been through a full grace period of GC rounds by the time a pod deleted after
	// it was allocated has been collected: it must still hold its address.
	request("c-later", "later", bindPod(t, ctx, cp, ns, "later", node))
	deletePod(t, ctx, cp, ns, "later")
	waitReleased("c-later")
	if h := held(); !h["c-new"] || !h["c-kept"] {
		t.Errorf("after another collection: c-new held %v, c-kept held %v; want both kept", h["c-new"], h["c-kept"])
	}
}
