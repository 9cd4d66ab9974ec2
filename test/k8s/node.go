package k8s

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// NodeConfig describes one kubelet node inside an existing network namespace.
type NodeConfig struct {
	Name            string     // node name (kubelet --hostname-override)
	Dir             string     // the node's "disk": every file of the node lives here
	NetNS           string     // path of the node's network namespace
	IP              netip.Addr // node IP: its primary address in the namespace
	Kubeconfig      string     // kubelet's (system:node:<Name>)
	ProxyKubeconfig string     // kube-proxy's (system:kube-proxy)
	CAFile          string     // cluster CA: kubelet trusts client certificates it signs
	Bins            string     // Kubernetes binaries
	SandboxImage    string     // pod sandbox image (imported, never pulled)
	Images          []string   // image tarballs imported into containerd before kubelet starts
	ClusterCIDR     string     // kube-proxy --cluster-cidr: pod addresses
	CgroupRoot      string     // unique cgroup parent of every pod of the node
	HostPlugins     string     // directory of CNI plugins the node has in /opt/cni/bin from the start
	// RefSubnet, when set, adds the runtime handler "ref" (RuntimeClass ref): pods of that
	// class get ptp + host-local from this subnet instead of the installed CNI
	// configuration, in the same node: the reference for start-up figures.
	RefSubnet string
}

// RefHandler is the containerd runtime handler (and RuntimeClass) of ptp + host-local.
const RefHandler = "ref"

func refConflist(subnet string) string {
	return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ref","plugins":[{"type":"ptp","ipMasq":false,"mtu":1500,
  "ipam":{"type":"host-local","ranges":[[{"subnet":%q}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}`, subnet)
}

// Node is a running node: a private mount namespace (held by a sleeping process) in which
// containerd, kubelet and kube-proxy run, joined to the node's network namespace. Inside the
// mount namespace /run, /var/lib and /var/log are directories of Dir, /etc and /opt are
// overlays whose writes land in Dir (CNI configuration and plugins installed by a DaemonSet
// stay off the host), and the machine-wide sysctls kubelet sets read from files.
type Node struct {
	Cfg    NodeConfig
	Socket string // containerd's
	mnt    *MountNS
	procs  map[string]*process
}

// StartNode brings the node up to a registered kubelet (Ready only once a CNI
// configuration is installed). On error the caller still calls Close.
func StartNode(ctx context.Context, c NodeConfig) (*Node, error) {
	n := &Node{Cfg: c, Socket: filepath.Join(c.Dir, "containerd.sock"), procs: map[string]*process{}}
	if err := n.mounts(); err != nil {
		return n, err
	}
	if err := n.startContainerd(ctx); err != nil {
		return n, err
	}
	for _, img := range c.Images {
		if out, err := exec.CommandContext(ctx, "ctr", "-a", n.Socket, "-n", "k8s.io", "images", "import", img).CombinedOutput(); err != nil {
			return n, fmt.Errorf("import %s on %s: %w: %s", img, c.Name, err, out)
		}
	}
	if err := n.StartKubelet(); err != nil {
		return n, err
	}
	return n, n.startProxy()
}

// enter is the command prefix that runs a program in the node's namespaces.
func (n *Node) enter() []string {
	return n.mnt.Enter(n.Cfg.NetNS)
}

// Path is where a path inside the node's mount namespace lives on the host, for the
// directories the node keeps in Dir (/run, /var/lib, /var/log, /etc and /opt writes).
func (n *Node) Path(p string) string {
	for in, out := range map[string]string{"/run": "run", "/var/lib": "varlib", "/var/log": "varlog", "/etc": "etc.up", "/opt": "opt.up"} {
		if p == in || strings.HasPrefix(p, in+"/") {
			return filepath.Join(n.Cfg.Dir, out, strings.TrimPrefix(p, in))
		}
	}
	return ""
}

func (n *Node) mounts() error {
	d := n.Cfg.Dir
	for _, sub := range []string{"run", "varlib", "varlog", "etc.up", "etc.work", "opt.up", "opt.work", "sysctl", "pod-logs", "volume-plugins"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return err
		}
	}
	if err := copyDir(n.Cfg.HostPlugins, filepath.Join(d, "opt.up", "cni", "bin")); err != nil {
		return err
	}
	if n.Cfg.RefSubnet != "" {
		ref := filepath.Join(d, "etc.up", "cni", "ref.d")
		if err := os.MkdirAll(ref, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(ref, "10-ref.conflist"), []byte(refConflist(n.Cfg.RefSubnet)), 0o644); err != nil {
			return err
		}
	}
	// kubelet sets these machine-wide values (its setupKernelTunables); inside the node it finds
	// them set already, in files bound over /proc/sys, and the host keeps its own.
	var script strings.Builder
	for _, k := range kubeletSysctls {
		f := filepath.Join(d, "sysctl", strings.ReplaceAll(k.path, "/", "_"))
		if err := os.WriteFile(f, []byte(k.value+"\n"), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&script, "mount --bind %s /proc/sys/%s && ", f, k.path)
	}
	for _, m := range []struct{ src, dst string }{{"run", "/run"}, {"varlib", "/var/lib"}, {"varlog", "/var/log"}} {
		fmt.Fprintf(&script, "mount --bind %s %s && ", filepath.Join(d, m.src), m.dst)
	}
	for _, o := range []string{"etc", "opt"} {
		fmt.Fprintf(&script, "mount -t overlay overlay -o lowerdir=/%[1]s,upperdir=%[2]s/%[1]s.up,workdir=%[2]s/%[1]s.work /%[1]s && ", o, d)
	}
	script.WriteString("true")
	var err error
	n.mnt, err = NewMountNS(script.String())
	return err
}

func (n *Node) startContainerd(ctx context.Context) error {
	d := n.Cfg.Dir
	toml := ContainerdConfig{
		Root: filepath.Join(d, "containerd", "root"), State: filepath.Join(d, "containerd", "state"),
		Opt: filepath.Join(d, "containerd", "opt"), Socket: n.Socket, SandboxImage: n.Cfg.SandboxImage,
		RuncRoot: filepath.Join(d, "runc"), CNIBinDir: "/opt/cni/bin", CNIConfDir: "/etc/cni/net.d",
		Handlers: []Handler{{Name: "runc"}, {Name: "ref", ConfDir: "/etc/cni/ref.d"}},
	}.TOML()
	conf := filepath.Join(d, "containerd.toml")
	if err := os.WriteFile(conf, []byte(toml), 0o644); err != nil {
		return err
	}
	p, err := startProcessIn(d, "containerd", n.enter(), "containerd", "--config", conf)
	if err != nil {
		return err
	}
	n.procs["containerd"] = p
	return Poll(30*time.Second, func() bool {
		if ok, _ := p.exited(); ok {
			return true
		}
		return exec.CommandContext(ctx, "ctr", "-a", n.Socket, "version").Run() == nil
	})
}

// StartKubelet starts (or restarts) the node's kubelet.
func (n *Node) StartKubelet() error {
	c, d := n.Cfg, n.Cfg.Dir
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %s}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: %s
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://%s
podLogsDir: %s
volumePluginDir: %s
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%"}
serializeImagePulls: false
maxPods: 110
`, c.IP, c.CAFile, c.CgroupRoot, n.Socket, filepath.Join(d, "pod-logs"), filepath.Join(d, "volume-plugins"))
	path := filepath.Join(d, "kubelet.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	p, err := startProcessIn(d, "kubelet", n.enter(), filepath.Join(c.Bins, "kubelet"), "--config="+path,
		"--kubeconfig="+c.Kubeconfig, "--root-dir=/var/lib/kubelet", "--hostname-override="+c.Name,
		"--node-ip="+c.IP.String(), "--v=2")
	if err != nil {
		return err
	}
	n.procs["kubelet"] = p
	return nil
}

// StopKubelet stops the node's kubelet; its containers keep running (as when kubelet
// crashes or the node loses the API server).
func (n *Node) StopKubelet() {
	if p := n.procs["kubelet"]; p != nil {
		p.stop(10 * time.Second)
		delete(n.procs, "kubelet")
	}
}

func (n *Node) startProxy() error {
	c := n.Cfg
	p, err := startProcessIn(c.Dir, "kube-proxy", n.enter(), filepath.Join(c.Bins, "kube-proxy"),
		"--kubeconfig="+c.ProxyKubeconfig, "--hostname-override="+c.Name, "--proxy-mode=iptables",
		"--cluster-cidr="+c.ClusterCIDR, "--bind-address="+c.IP.String(),
		"--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256",
		"--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0", "--v=2")
	if err != nil {
		return err
	}
	n.procs["kube-proxy"] = p
	return nil
}

// Logs returns the tail of every process log of the node.
func (n *Node) Logs(max int) string {
	var b strings.Builder
	for _, name := range []string{"containerd", "kubelet", "kube-proxy"} {
		if p := n.procs[name]; p != nil {
			fmt.Fprintf(&b, "--- %s %s (tail) ---\n%s\n", n.Cfg.Name, name, p.tail(max))
		}
	}
	return b.String()
}

// Close stops kube-proxy and kubelet, kills every container of the node (its cgroup) and
// every containerd shim, then containerd and the mount namespace, and removes the node's
// cgroups. The network namespace and Dir belong to the caller.
func (n *Node) Close() error {
	for _, name := range []string{"kube-proxy", "kubelet"} {
		if p := n.procs[name]; p != nil {
			p.stop(10 * time.Second)
		}
	}
	var errs []error
	if n.mnt != nil {
		errs = append(errs, n.killContainers())
	}
	if n.Cfg.CgroupRoot != "" {
		errs = append(errs, killCgroup(n.Cfg.CgroupRoot))
	}
	// Shims outlive containerd by design; each names its containerd's socket.
	for _, pid := range shimsOf(n.Socket) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if p := n.procs["containerd"]; p != nil {
		p.stop(10 * time.Second)
	}
	n.procs = map[string]*process{}
	n.mnt.Close()
	n.mnt = nil
	if n.Cfg.CgroupRoot != "" {
		errs = append(errs, killCgroup(n.Cfg.CgroupRoot))
	}
	return errors.Join(errs...)
}

// kubeletSysctls are the kernel tunables kubelet (v1.35, without --protect-kernel-defaults)
// writes when they differ from what it wants.
var kubeletSysctls = []struct{ path, value string }{
	{"vm/overcommit_memory", "1"}, {"vm/panic_on_oom", "0"}, {"kernel/panic", "10"}, {"kernel/panic_on_oops", "1"},
	{"kernel/keys/root_maxkeys", "1000000"}, {"kernel/keys/root_maxbytes", "25000000"},
}

// Poll calls cond every 50 ms until it holds, or fails once within has passed.
func Poll(within time.Duration, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", within)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// containers returns the processes of the node's containers, pid → command: those whose
// mounts come from the node's containerd (the root file systems it unpacked; the node's
// own daemons, in the same mount namespace, count too: Close ends them anyway). kubelet
// without QoS cgroups leaves the cgroup parent to containerd's default, shared by every
// containerd of the machine, so the node's cgroup cannot tell them apart.
func (n *Node) containers() map[int]string {
	return processesMarked(filepath.Join(n.Cfg.Dir, "containerd")+"/", false)
}

// Pids returns the processes of the node's containers whose command is argv0.
func (n *Node) Pids(argv0 string) []int {
	var pids []int
	for pid, a := range n.containers() {
		if a == argv0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killContainers kills every process of the node's containers and removes the cgroups
// they were in (once empty).
func (n *Node) killContainers() error { return killMarked(n.containers) }
