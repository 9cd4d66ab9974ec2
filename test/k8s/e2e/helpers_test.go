//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
	"github.com/vnet-cni/vnet-cni/test/k8s"
	"github.com/vnet-cni/vnet-cni/test/vnet"
)

func vnetPrefix(tag string) string { return vnet.TestPrefix(tag) }

// agentDeployment is n replicas of the agent's HTTP server on :8080, spread over the nodes.
func agentDeployment(name string, n int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(n),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To(int64(2)),
					// A cordoned node is no spreading domain (Honor its taints): a drain moves pods.
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
						WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
						NodeTaintsPolicy: ptr.To(corev1.NodeInclusionPolicyHonor)}},
					Containers: []corev1.Container{{Name: "agent", Image: k8s.WorkloadImage, ImagePullPolicy: corev1.PullNever,
						Command: []string{"/agent", "serve"}, Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}},
				},
			},
		},
	}
}

// waitPods waits until want pods match selector in namespace and all are Running with an
// address, and returns them.
func waitPods(t *testing.T, ctx context.Context, c *k8s.Cluster, ns, selector string, want int, within time.Duration) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	var last string
	deadline := time.Now().Add(within)
	for {
		list, err := c.CP.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err == nil {
			pods = pods[:0]
			running := 0
			for _, p := range list.Items {
				if p.DeletionTimestamp != nil {
					continue
				}
				pods = append(pods, p)
				if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && podReady(&p) {
					running++
				}
			}
			if len(pods) == want && running == want {
				return pods
			}
			last = fmt.Sprintf("%d pods, %d running with an address", len(pods), running)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods %s in %s: want %d running, have %s after %s", selector, ns, want, last, within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// cnsClient dials the cns of node n through its socket in the node's /run.
func cnsClient(t *testing.T, n *k8s.Node) cnsv1grpc.PoolServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+n.Path("/run/cns/cns.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return cnsv1grpc.NewPoolServiceClient(conn)
}

// allocations lists a node's cns allocations, address → "namespace/name".
func allocations(t *testing.T, ctx context.Context, pool cnsv1grpc.PoolServiceClient) map[netip.Addr]string {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := pool.ListAllocations(cctx, &cnsv1.ListAllocationsRequest{})
	if err != nil {
		t.Fatalf("ListAllocations: %v", err)
	}
	out := map[netip.Addr]string{}
	for _, a := range resp.Allocations {
		out[netip.MustParseAddr(a.Address)] = a.PodNamespace + "/" + a.PodName
	}
	return out
}

// exec runs a command in a pod through the apiserver and kubelet (kubectl exec).
func podExec(ctx context.Context, c *k8s.Cluster, ns, pod string, cmd ...string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := c.CP.Kubectl(cctx, append([]string{"-n", ns, "exec", pod, "--"}, cmd...)...)
	return strings.TrimSpace(string(out)), err
}

// get fetches url from inside pod with the agent and returns "host source-address".
func get(ctx context.Context, c *k8s.Cluster, ns, pod, url string) (host, src string, err error) {
	out, err := podExec(ctx, c, ns, pod, "/agent", "get", url)
	if err != nil {
		return "", "", err
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return "", "", fmt.Errorf("agent answered %q", out)
	}
	return f[0], f[1], nil
}
