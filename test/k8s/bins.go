package k8s

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Versions pinned by build/ and the Makefile (K8S_VERSION, ETCD_VERSION); the Makefile caches
// the binaries under .tools/k8s-<Version>.
const (
	Version     = "v1.35.4"
	EtcdVersion = "v3.6.16"
)

// Binaries the control plane needs; nodes add kubelet and kube-proxy.
var controlPlaneBins = []string{"etcd", "kube-apiserver", "kubectl"}

// BinDir returns the directory holding the pinned binaries: $VNET_K8S_BIN, else
// $KUBEBUILDER_ASSETS (envtest's convention), else .tools/k8s-<Version> of the repository.
func BinDir() string {
	for _, env := range []string{"VNET_K8S_BIN", "KUBEBUILDER_ASSETS"} {
		if d := os.Getenv(env); d != "" {
			return d
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, ".git")); err == nil {
				return filepath.Join(dir, ".tools", "k8s-"+Version)
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// missing lists the binaries of names absent from dir.
func missing(dir string, names []string) error {
	var errs []error
	for _, n := range names {
		p := filepath.Join(dir, n)
		if _, err := exec.LookPath(p); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// RequireBins returns the binary directory, or stops the test when a binary is missing:
// skipped on a developer machine, failed under CI=true, where `make test` builds them and a
// skip would hide the Kubernetes tests.
func RequireBins(t testing.TB, names ...string) string {
	t.Helper()
	dir := BinDir()
	if len(names) == 0 {
		names = controlPlaneBins
	}
	if err := missing(dir, names); err != nil {
		msg := fmt.Sprintf("Kubernetes %s binaries missing (run `make k8s-bins`): %v", Version, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "; CI=true: failing rather than skipping")
		}
		t.Skip(msg)
	}
	return dir
}
