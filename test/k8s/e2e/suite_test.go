//go:build e2e

package e2e

import (
	"context"
	"net/netip"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnet-cni/vnet-cni/test/k8s"
)

const appNS = "default"

// One cluster carries the suites in order, as a user's cluster would: deploy, run a
// workload, reach it, scale it away, restart cns, drain a node.
func TestKubernetesEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	c := newCluster(t, ctx, "k8s", 2)
	w := &world{c: c}
	steps := []struct {
		name string
		fn   func(*testing.T, context.Context, *world)
	}{
		{"PendingUntilConflist", testPendingUntilConflist},
		{"Deployment", testDeployment},
		{"Connectivity", testConnectivity},
		{"Service", testService},
		{"Egress", testEgress},
		{"PodStart", testPodStart},
		{"CNSRestart", testCNSRestart},
		{"Drain", testDrain},
		{"ScaleDown", testScaleDown},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.fn(t, ctx, w) }) {
			return // later steps build on this one
		}
	}
}

// world is what the steps share.
type world struct {
	c    *k8s.Cluster
	pods []corev1.Pod // the Deployment's, Running
}

const app = "web"

// Before the DaemonSet's install-cni writes the conflist, nodes are NotReady and a
// workload stays Pending; afterwards nodes turn Ready with the conflist in place.
func testPendingUntilConflist(t *testing.T, ctx context.Context, w *world) {
	c := w.c
	if _, err := c.CP.Client.AppsV1().Deployments(appNS).Create(ctx, agentDeployment("early", 2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The scheduler and the node controller get a few seconds to act on the workload.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		pods, err := c.CP.Client.CoreV1().Pods(appNS).List(ctx, metav1.ListOptions{LabelSelector: "app=early"})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodPending || p.Spec.NodeName != "" {
				t.Fatalf("pod %s is %s on %q before any CNI configuration exists", p.Name, p.Status.Phase, p.Spec.NodeName)
			}
		}
		for _, n := range c.Nodes {
			node, err := c.CP.Client.CoreV1().Nodes().Get(ctx, n.Cfg.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if k8s.NodeReady(node) {
				t.Fatalf("node %s Ready before any CNI configuration exists", n.Cfg.Name)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	start := time.Now()
	if err := c.Deploy(ctx, map[string]string{"cooldown": "2s", "release-delay": "2s", "pod-gc-grace": "5s"}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitNodes(ctx, true, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("nodes Ready %s after kubectl apply", time.Since(start).Round(time.Millisecond))
	for _, n := range c.Nodes {
		if _, err := os.Stat(n.Path("/etc/cni/net.d/10-vnet.conflist")); err != nil {
			t.Errorf("node %s Ready without the conflist: %v", n.Cfg.Name, err)
		}
	}
	waitPods(t, ctx, c, appNS, "app=early", 2, 2*time.Minute)
	if err := c.CP.Client.AppsV1().Deployments(appNS).Delete(ctx, "early", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// 20 replicas over both nodes, each with a VNet address that its node's cns lists with the
// pod's namespace and name.
func testDeployment(t *testing.T, ctx context.Context, w *world) {
	c := w.c
	start := time.Now()
	if _, err := c.CP.Client.AppsV1().Deployments(appNS).Create(ctx, agentDeployment(app, 20), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w.pods = waitPods(t, ctx, c, appNS, "app="+app, 20, 3*time.Minute)
	t.Logf("20 replicas Running %s after create", time.Since(start).Round(time.Millisecond))
	subnet := c.VNet.MockCfg.Subnet
	perNode := map[string]map[netip.Addr]string{}
	for _, p := range w.pods {
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || !subnet.Contains(ip) {
			t.Errorf("pod %s address %q not in the VNet subnet %s", p.Name, p.Status.PodIP, subnet)
			continue
		}
		if perNode[p.Spec.NodeName] == nil {
			perNode[p.Spec.NodeName] = map[netip.Addr]string{}
		}
		perNode[p.Spec.NodeName][ip] = appNS + "/" + p.Name
	}
	if len(perNode) != 2 {
		t.Fatalf("pods on %d nodes, want both", len(perNode))
	}
	for _, n := range c.Nodes {
		got := allocations(t, ctx, cnsClient(t, n))
		for ip, owner := range perNode[n.Cfg.Name] {
			if got[ip] != owner {
				t.Errorf("node %s cns lists %s as %q, want %q", n.Cfg.Name, ip, got[ip], owner)
			}
		}
	}
}
