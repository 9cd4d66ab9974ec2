//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func createService(t *testing.T, ctx context.Context, w *world, name string, selector map[string]string) string {
	t.Helper()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{Selector: selector,
		Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	got, err := w.c.CP.Client.CoreV1().Services(appNS).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got.Spec.ClusterIP
}

// A ClusterIP Service reached through kube-proxy from a pod on one node lands on backends
// of the other node too, which see the client pod's own address; a pod reaches itself
// through its own Service (hairpin).
func testService(t *testing.T, ctx context.Context, w *world) {
	c := w.c
	ip := createService(t, ctx, w, app, map[string]string{"app": app})
	n1, n2 := c.VNet.Nodes[0].Name, c.VNet.Nodes[1].Name
	client := podsOn(w.pods, n1)[0]
	names := map[string]string{} // pod name → node
	for _, p := range w.pods {
		names[p.Name] = p.Spec.NodeName
	}
	seen := map[string]bool{}
	deadline := time.Now().Add(60 * time.Second)
	var lastErr error
	for !seen[n2] {
		if time.Now().After(deadline) {
			t.Fatalf("service %s from a pod on %s: no answer from a backend on %s within 60s (seen %v, last error %v)", ip, n1, n2, seen, lastErr)
		}
		host, src, err := get(ctx, c, appNS, client.Name, "http://"+ip+"/")
		if err != nil { // kube-proxy may not have the rules yet: poll again shortly
			lastErr = err
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if names[host] == "" {
			t.Fatalf("service answered by %q, not a backend", host)
		}
		seen[names[host]] = true
		// The client itself as the backend is hairpin traffic, which kube-proxy masquerades.
		if host != client.Name && src != client.Status.PodIP {
			t.Errorf("backend %s saw %s, want the client pod's %s", host, src, client.Status.PodIP)
		}
	}

	// Hairpin: one pod behind its own Service.
	self := podsOn(w.pods, n2)[0]
	if _, err := c.CP.Client.CoreV1().Pods(appNS).Patch(ctx, self.Name, "application/merge-patch+json",
		[]byte(`{"metadata":{"labels":{"hairpin":"yes"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	hip := createService(t, ctx, w, "hairpin", map[string]string{"hairpin": "yes"})
	deadline = time.Now().Add(60 * time.Second)
	for {
		host, _, err := get(ctx, c, appNS, self.Name, "http://"+hip+"/")
		if err == nil && host == self.Name {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hairpin: pod %s through service %s: %q, %v", self.Name, hip, host, err)
		}
		time.Sleep(200 * time.Millisecond) // poll interval
	}
}
