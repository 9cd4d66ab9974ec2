package k8s

import (
	"fmt"
	"strings"
)

// ContainerdConfig is the containerd 1.6 CRI configuration of a node in a network and mount
// namespace of its own: every path under the node's directory, runc's state under RuncRoot, and
// one runtime handler per CNI configuration directory, so a single containerd can start
// sandboxes with vnet-cni and with the reference plugins side by side.
type ContainerdConfig struct {
	Root, State, Opt string // containerd's own directories
	Socket           string // the gRPC socket; ttrpc sits beside it
	SandboxImage     string
	RuncRoot         string
	CNIBinDir        string
	CNIConfDir       string    // the CRI plugin's default conf_dir
	Handlers         []Handler // the first is the default runtime
}

// Handler is a runc runtime handler; ConfDir, when set, gives it a CNI configuration
// directory of its own (a RuntimeClass or `crictl runp --runtime` selects it).
type Handler struct {
	Name, ConfDir string
}

// TOML renders the configuration file.
func (c ContainerdConfig) TOML() string {
	var b strings.Builder
	fmt.Fprintf(&b, `version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = %q
[ttrpc]
  address = "%s.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = %q
`, c.Root, c.State, c.Socket, c.Socket, c.Opt, c.SandboxImage, c.Handlers[0].Name)
	const rt = `    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.`
	for _, h := range c.Handlers {
		fmt.Fprintf(&b, "%s%s]\n      runtime_type = \"io.containerd.runc.v2\"\n", rt, h.Name)
		if h.ConfDir != "" {
			fmt.Fprintf(&b, "      cni_conf_dir = %q\n      cni_max_conf_num = 1\n", h.ConfDir)
		}
		fmt.Fprintf(&b, "  %s%s.options]\n        Root = %q\n", rt, h.Name, c.RuncRoot)
	}
	fmt.Fprintf(&b, `  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
`, c.CNIBinDir, c.CNIConfDir)
	return b.String()
}
