//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	"github.com/vnet-cni/vnet-cni/test/k8s"
)

// eventually polls cond until it returns nil or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, within, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func cnsPod(ctx context.Context, c *k8s.Cluster, node string) (*corev1.Pod, error) {
	list, err := c.CP.Client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=cns",
		FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, err
	}
	if len(list.Items) != 1 {
		return nil, fmt.Errorf("%d cns pods on %s", len(list.Items), node)
	}
	return &list.Items[0], nil
}

func restarts(p *corev1.Pod, container string) int32 {
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == container {
			return s.RestartCount
		}
	}
	return -1
}

// cns killed on a node: kubelet restarts its container, and the node's pods keep their
// addresses (in the API and in cns), their connectivity, and no address changes hands.
func testCNSRestart(t *testing.T, ctx context.Context, w *world) {
	c := w.c
	node := c.Nodes[0]
	pool := cnsClient(t, node)
	before := allocations(t, ctx, pool)
	p, err := cnsPod(ctx, c, node.Cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	was := restarts(p, "cns")
	pids := node.Pids("/cns")
	if len(pids) != 1 {
		t.Fatalf("cns processes on %s: %v", node.Cfg.Name, pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "kubelet restarts cns", func() error {
		p, err := cnsPod(ctx, c, node.Cfg.Name)
		if err != nil {
			return err
		}
		if restarts(p, "cns") <= was || !podReady(p) {
			return fmt.Errorf("cns restarts %d, ready %v", restarts(p, "cns"), podReady(p))
		}
		return nil
	})
	if after := allocations(t, ctx, pool); !maps.Equal(before, after) {
		t.Errorf("allocations changed across the cns restart:\nbefore %v\nafter  %v", before, after)
	}
	pods := waitPods(t, ctx, c, appNS, "app="+app, 20, time.Minute)
	for _, p := range pods {
		for _, q := range w.pods {
			if p.Name == q.Name && p.Status.PodIP != q.Status.PodIP {
				t.Errorf("pod %s address %s → %s", p.Name, q.Status.PodIP, p.Status.PodIP)
			}
		}
	}
	testConnectivity(t, ctx, w)
}

// Node 1's kubelet dies and its pods are force-deleted (a drain of a dead node): they come
// back on node 2, and node 1's cns, which still runs, releases their addresses because the
// API server no longer has the pods (API-server GC), not because of a CNI DEL.
func testDrain(t *testing.T, ctx context.Context, w *world) {
	c := w.c
	n1, n2 := c.Nodes[0], c.Nodes[1]
	pool1 := cnsClient(t, n1)
	if len(allocations(t, ctx, pool1)) == 0 {
		t.Fatal("node 1 has no allocations to drain")
	}
	n1.StopKubelet()
	if _, err := c.CP.Client.CoreV1().Nodes().Patch(ctx, n1.Cfg.Name, "application/merge-patch+json",
		[]byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range podsOn(w.pods, n1.Cfg.Name) {
		if err := c.CP.Client.CoreV1().Pods(appNS).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}); err != nil {
			t.Fatal(err)
		}
	}
	w.pods = waitPods(t, ctx, c, appNS, "app="+app, 20, 3*time.Minute)
	for _, p := range w.pods {
		if p.Spec.NodeName != n2.Cfg.Name {
			t.Errorf("pod %s on %s after the drain", p.Name, p.Spec.NodeName)
		}
	}
	eventually(t, 2*time.Minute, "node 1's cns releases the drained pods' addresses", func() error {
		if a := allocations(t, ctx, pool1); len(a) > 0 {
			return fmt.Errorf("still allocated: %v", a)
		}
		return nil
	})
	// Node 1 comes back: kubelet removes the orphaned sandboxes (a DEL of released
	// addresses), and the node takes pods again.
	if err := n1.StartKubelet(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CP.Client.CoreV1().Nodes().Patch(ctx, n1.Cfg.Name, "application/merge-patch+json",
		[]byte(`{"spec":{"unschedulable":false}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitNodes(ctx, true, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// Scale 20 → 0: every address goes back to cns, and after the cooldown and release delay
// the NIC shrinks to the pool's high watermark; no host veth is left on any node.
func testScaleDown(t *testing.T, ctx context.Context, w *world) {
	c := w.c
	if _, err := c.CP.Client.AppsV1().Deployments(appNS).Patch(ctx, app, "application/merge-patch+json",
		[]byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Minute, "all pods gone", func() error {
		list, err := c.CP.Client.CoreV1().Pods(appNS).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return err
		}
		if len(list.Items) > 0 {
			return fmt.Errorf("%d pods left", len(list.Items))
		}
		return nil
	})
	for i, n := range c.Nodes {
		vn := c.VNet.Nodes[i]
		pool := cnsClient(t, n)
		eventually(t, 2*time.Minute, n.Cfg.Name+" pool back to its watermark", func() error {
			if a := allocations(t, ctx, pool); len(a) > 0 {
				return fmt.Errorf("allocated: %v", a)
			}
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			pr, err := pool.GetPool(cctx, &cnsv1.GetPoolRequest{})
			if err != nil {
				return err
			}
			k, l := pr.GetCounts(), pr.GetLimits()
			if k.GetAssigned()+k.GetCooldown()+k.GetPending()+k.GetPendingRelease() > 0 || k.GetAvailable() > l.GetMaxFree() {
				return fmt.Errorf("counts %v, max free %d", k, l.GetMaxFree())
			}
			// The NIC itself, as ARM (mockarm) holds it, matches the pool.
			if nic, ok := c.VNet.Mock.NICAddrsByID(vn.NICID); !ok || uint32(len(nic)) != k.GetAvailable() {
				return fmt.Errorf("NIC holds %d secondary addresses, the pool %d available", len(nic), k.GetAvailable())
			}
			return nil
		})
		eventually(t, time.Minute, n.Cfg.Name+" host veths removed", func() error {
			veths, err := vn.HostVeths()
			if err != nil || len(veths) > 0 {
				return fmt.Errorf("veths %v (%v)", veths, err)
			}
			return nil
		})
	}
}
