//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
	"github.com/vnet-cni/vnet-cni/test/k8s"
)

const startNS = "podstart"

// startPods is how many pods of each kind the figures time, one at a time.
const startPods = 12

// Pod start, creation to Running with an address as the API server shows it, of vnet-cni
// pods and of pods of RuntimeClass ref (ptp + host-local) on the same nodes, alternating,
// one pod at a time. A figure, not an assertion: it is logged (and added to $VNET_REPORT).
func testPodStart(t *testing.T, ctx context.Context, w *world) {
	c := w.c
	if err := c.CP.Namespace(ctx, startNS); err != nil {
		t.Fatal(err)
	}
	rc := &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: k8s.RefHandler}, Handler: k8s.RefHandler}
	if _, err := c.CP.Client.NodeV1().RuntimeClasses().Create(ctx, rc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var ours, ref []float64
	for i := range startPods + 1 {
		node := c.Nodes[i%len(c.Nodes)].Cfg.Name
		for _, class := range []*string{nil, ptr.To(k8s.RefHandler)} {
			d, ip := startOne(t, ctx, c, fmt.Sprintf("p%d-%s", i, ptr.Deref(class, "ours")), node, class)
			if class == nil && !c.VNet.MockCfg.Subnet.Contains(ip) {
				t.Errorf("vnet-cni pod got %s, outside the VNet", ip)
			}
			if i == 0 { // warm-up
				continue
			}
			if class == nil {
				ours = append(ours, d)
			} else {
				ref = append(ref, d)
			}
		}
	}
	line := fmt.Sprintf("pod start (creation → Running with an address, %d pods each, one at a time, 2 nodes): "+
		"vnet-cni median %.0f ms p90 %.0f ms; ptp+host-local median %.0f ms p90 %.0f ms",
		len(ours), quantile(ours, 0.5), quantile(ours, 0.9), quantile(ref, 0.5), quantile(ref, 0.9))
	t.Log(line)
	pools := make([]cnsv1grpc.PoolServiceClient, len(c.Nodes)) // one connection per node, not per poll
	for i, n := range c.Nodes {
		pools[i] = cnsClient(t, n)
	}
	eventually(t, 2*time.Minute, "the timed pods deleted", func() error {
		list, err := c.CP.Client.CoreV1().Pods(startNS).List(ctx, metav1.ListOptions{})
		if err == nil && len(list.Items) > 0 {
			err = fmt.Errorf("%d pods left", len(list.Items))
		}
		if err != nil {
			return err
		}
		for _, pool := range pools { // CNI DEL comes after the API object is gone
			for ip, owner := range allocations(t, ctx, pool) {
				if strings.HasPrefix(owner, startNS+"/") {
					return fmt.Errorf("%s still holds %s", owner, ip)
				}
			}
		}
		return nil
	})
	if p := os.Getenv("VNET_REPORT"); p != "" {
		if f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintln(f, line)
			f.Close()
		}
	}
}

// startOne creates a pod and returns the milliseconds until the API server shows it
// Running with an address, and the address; the pod is deleted without waiting.
func startOne(t *testing.T, ctx context.Context, c *k8s.Cluster, name, node string, class *string) (float64, netip.Addr) {
	t.Helper()
	pods := c.CP.Client.CoreV1().Pods(startNS)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	wt, err := pods.Watch(wctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	defer wt.Stop()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
		RuntimeClassName: class, NodeSelector: map[string]string{"kubernetes.io/hostname": node},
		TerminationGracePeriodSeconds: ptr.To(int64(0)),
		Containers:                    []corev1.Container{{Name: "agent", Image: k8s.WorkloadImage, ImagePullPolicy: corev1.PullNever, Command: []string{"/agent", "serve"}}}}}
	start := time.Now()
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for ev := range wt.ResultChan() {
		p, ok := ev.Object.(*corev1.Pod)
		if !ok || ev.Type == watch.Deleted {
			continue
		}
		if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
			took := float64(time.Since(start).Microseconds()) / 1000
			go func() { _ = pods.Delete(context.WithoutCancel(ctx), name, metav1.DeleteOptions{}) }()
			ip, _ := netip.ParseAddr(p.Status.PodIP)
			return took, ip
		}
	}
	t.Fatalf("pod %s (class %v) not Running with an address within 2m", name, ptr.Deref(class, "default"))
	return 0, netip.Addr{}
}

func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
