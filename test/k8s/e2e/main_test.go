//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/vnet-cni/vnet-cni/test/k8s"
	"github.com/vnet-cni/vnet-cni/test/vnet"
)

var images k8s.Images

// TestMain builds the node image (or takes make image's, $VNET_IMAGE) and the workload image
// once for every suite.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// A run killed before it could close leaves its containers (their shims outlive it),
	// namespaces and files: remove them before starting.
	if err := errors.Join(k8s.SweepStaleRuns(filepath.Join(os.TempDir(), "vk8s-*")), vnet.SweepStale()); err != nil {
		fmt.Fprintln(os.Stderr, "sweeping earlier runs:", err)
	}
	dir, err := os.MkdirTemp("", "vnet-k8s-e2e-images")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	repo, err := k8s.RepoRoot()
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		images, err = k8s.BuildImages(ctx, repo, dir, os.Getenv("VNET_IMAGE"))
		cancel()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		return 1
	}
	return m.Run()
}

// requireHost stops the test when this machine cannot run nodes: skipped on a developer
// machine, failed under CI=true.
func requireHost(t *testing.T) {
	t.Helper()
	var why string
	if os.Geteuid() != 0 {
		why = "needs root (network and mount namespaces)"
	}
	for _, b := range []string{"containerd", "runc", "ctr", "iptables", "nsenter", "unshare"} {
		if _, err := exec.LookPath(b); err != nil && why == "" {
			why = b + " not installed (make e2e-deps)"
		}
	}
	if why == "" {
		k8s.RequireBins(t, "etcd", "kube-apiserver", "kubectl", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(why + "; CI=true: failing rather than skipping")
	}
	t.Skip(why)
}

// newCluster starts a cluster of n nodes for t, removed when t ends (logs shown on failure).
func newCluster(t *testing.T, ctx context.Context, tag string, nodes int) *k8s.Cluster {
	t.Helper()
	requireHost(t)
	dir, err := os.MkdirTemp("", "vk8s-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, k8s.OwnerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, err := k8s.NewCluster(ctx, k8s.ClusterOptions{Prefix: vnetPrefix(tag), WorkDir: filepath.Join(dir, "c"), Nodes: nodes, Images: images, Log: log})
	t.Cleanup(func() {
		if t.Failed() && c != nil {
			t.Log(c.Logs(3000))
		}
		if c != nil {
			if err := c.Close(); err != nil {
				t.Errorf("close cluster: %v", err)
			}
		}
		os.RemoveAll(dir)
	})
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	return c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
