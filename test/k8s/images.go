package k8s

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/vnet-cni/vnet-cni/test/image"
)

// Image references the harness uses.
const (
	// NodeImage is the reference in cns/deploy/daemonset.yaml (make image builds it).
	NodeImage = "localhost/vnet-cni:dev"
	// WorkloadImage holds /pause (the pod sandbox) and /agent (the suites' HTTP server and client).
	WorkloadImage = "localhost/vnet-e2e:dev"
)

// Images are the tarballs a cluster imports into every node, and the node's own CNI
// plugins (a VM's kubernetes-cni package: loopback, which containerd runs for every pod,
// and ptp + host-local for the reference configuration).
type Images struct {
	Node, Workload string
	HostPlugins    string // directory
}

// hostPlugins are the CNI plugins every node has in /opt/cni/bin before any DaemonSet runs.
var hostPlugins = []string{"loopback", "ptp", "host-local"}

// BuildImages compiles the node image's binaries and the workload's static, from the
// module containing repo, and writes both image tarballs to dir. nodeTar, when set, is used
// as the node image instead (the tarball of `make image`).
func BuildImages(ctx context.Context, repo, dir, nodeTar string) (Images, error) {
	bin := filepath.Join(dir, "bin")
	pkgs := []string{"./cmd/cns", "./cmd/vnet-cni", "./cmd/install-cni", "./test/bench/pause", "./test/k8s/agent"}
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-trimpath", "-o", bin + "/"}, pkgs...)...)
	cmd.Dir, cmd.Env = repo, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Images{}, fmt.Errorf("go build %v: %w: %s", pkgs, err, out)
	}
	// The reference plugins come from the Makefile's pinned install (make e2e-deps).
	plug := cmp.Or(os.Getenv("VNET_CNI_PLUGINS"), filepath.Join(repo, ".tools", "cni"))
	for _, p := range hostPlugins {
		if _, err := os.Stat(filepath.Join(plug, p)); err != nil {
			return Images{}, fmt.Errorf("CNI plugin %s (run make e2e-deps): %w", p, err)
		}
	}
	im := Images{Node: nodeTar, Workload: filepath.Join(dir, "vnet-e2e.tar"), HostPlugins: plug}
	if im.Node == "" {
		im.Node = filepath.Join(dir, "vnet-cni.tar")
		if _, err := image.Build(NodeImage, image.NodeFiles(bin, filepath.Join(repo, "cmd/vnet-cni/10-vnet.conflist")), []string{"/cns"}, im.Node); err != nil {
			return im, err
		}
	}
	files := []image.File{{Src: filepath.Join(bin, "pause"), Dst: "/pause", Mode: 0o755}, {Src: filepath.Join(bin, "agent"), Dst: "/agent", Mode: 0o755}}
	_, err := image.Build(WorkloadImage, files, []string{"/pause"}, im.Workload)
	return im, err
}

// RepoRoot is the module root above the working directory.
func RepoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	mod := string(out[:len(out)-1])
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the vnet-cni module")
	}
	return filepath.Dir(mod), nil
}
