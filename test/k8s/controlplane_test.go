package k8s

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// The control plane serves the pinned version, enforces RBAC, and leaves no process or file
// behind when closed.
func TestControlPlaneServesPinnedVersionWithRBACAndCleansUp(t *testing.T) {
	cp := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	v, err := cp.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != Version {
		t.Errorf("apiserver reports %s, want %s (version ldflags)", v.GitVersion, Version)
	}
	if err := cp.Namespace(ctx, "rbac-check"); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	if _, err := cp.Client.CoreV1().Pods("rbac-check").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("admin creates a pod bound to a node: %v", err)
	}

	// A user with no binding is denied: RBAC is on.
	kc, err := cp.Kubeconfig("nobody", "nobody")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	nobody := kubernetes.NewForConfigOrDie(cfg)
	if _, err := nobody.CoreV1().Pods("rbac-check").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("unbound user listing pods: got %v, want Forbidden", err)
	}
	if out, err := cp.Kubectl(ctx, "get", "pods", "-n", "rbac-check", "-o", "name"); err != nil || !strings.Contains(string(out), "pod/p") {
		t.Errorf("kubectl get pods: %q, %v", out, err)
	}

	pids := make([]int, 0, len(cp.procs))
	for _, p := range cp.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	dir := cp.Dir
	cp.Close()
	for _, pid := range pids {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			t.Errorf("process %d still exists after Close", pid)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("run directory %s still exists after Close (%v)", dir, err)
	}
}
