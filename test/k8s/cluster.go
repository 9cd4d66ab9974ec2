package k8s

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vnet-cni/vnet-cni/cns"
	"github.com/vnet-cni/vnet-cni/cns/deploy"
	"github.com/vnet-cni/vnet-cni/test/vnet"
)

// ClusterOptions describe a Kubernetes cluster in an emulated VNet.
type ClusterOptions struct {
	Prefix  string // namespace and cgroup prefix, unique per run (vnet.TestPrefix)
	WorkDir string // everything of the run; removed by Close
	Nodes   int
	Images  Images
	Log     *slog.Logger
}

// Cluster is etcd, kube-apiserver, kube-controller-manager and kube-scheduler on this
// machine's loopback, with the apiserver also reachable at the VNet gateway (where nodes
// and pods find it), and one kubelet node (containerd, kubelet, kube-proxy) in each node
// namespace of an emulated VNet, its node IP the node's VNet primary address.
type Cluster struct {
	Opts   ClusterOptions
	VNet   *vnet.VNet
	CP     *ControlPlane
	Nodes  []*Node
	Server string // the apiserver's URL as nodes and pods see it

	closers []io.Closer
	procs   []*process
}

// NewCluster builds the VNet and the cluster; nodes register and stay NotReady until a CNI
// configuration is installed (Deploy). On error everything made so far is removed, and the
// error carries the tails of the logs of every process started.
func NewCluster(ctx context.Context, o ClusterOptions) (c *Cluster, err error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.WorkDir == "" || filepath.Clean(o.WorkDir) == "/" { // Close removes it
		return nil, fmt.Errorf("cluster work directory %q: want a directory of its own", o.WorkDir)
	}
	if o.WorkDir, err = filepath.Abs(o.WorkDir); err != nil {
		return nil, err
	}
	c = &Cluster{Opts: o}
	defer func() {
		if err != nil { // the logs go with WorkDir: keep their tails in the error
			logs := c.Logs(200)
			err = fmt.Errorf("%w\n%s", errors.Join(err, c.Close()), logs)
		}
	}()
	start := time.Now()
	// The VNet's nodes run no cns of their own: the DaemonSet brings it.
	c.VNet, err = vnet.New(vnet.Options{Prefix: o.Prefix, Nodes: o.Nodes, BinDir: o.WorkDir, WorkDir: filepath.Join(o.WorkDir, "vnet"), NoCNS: true, Log: o.Log})
	if err != nil {
		return c, err
	}
	cpDir := filepath.Join(o.WorkDir, "cp")
	if err := os.MkdirAll(cpDir, 0o755); err != nil {
		return c, err
	}
	sock := filepath.Join(cpDir, "egress.sock")
	proxy, err := connectProxy(sock, c.VNet.NS)
	if err != nil {
		return c, err
	}
	c.closers = append(c.closers, proxy)
	egress := filepath.Join(cpDir, "egress.yaml")
	if err := os.WriteFile(egress, []byte(egressConfig(sock)), 0o644); err != nil {
		return c, err
	}
	gw := c.VNet.Gateway.String()
	if c.CP, err = StartControlPlane(Options{AdvertiseAddress: gw, Dir: cpDir,
		ExtraAPIServerArgs: []string{"--egress-selector-config-file=" + egress}}); err != nil {
		return c, err
	}
	u, err := url.Parse(c.CP.URL)
	if err != nil {
		return c, err
	}
	c.Server = "https://" + net.JoinHostPort(gw, u.Port())
	fwd, err := forwardIntoNS(c.VNet.NS, net.JoinHostPort(gw, u.Port()), u.Host)
	if err != nil {
		return c, err
	}
	c.closers = append(c.closers, fwd)
	if err := c.startControllers(); err != nil {
		return c, err
	}
	o.Log.Info("control plane up", "took", time.Since(start).Round(time.Millisecond), "server", c.Server)
	for _, vn := range c.VNet.Nodes {
		if err := c.addNode(ctx, vn); err != nil {
			return c, fmt.Errorf("node %s: %w", vn.Name, err)
		}
	}
	return c, c.WaitNodes(ctx, false, 2*time.Minute)
}

func egressConfig(sock string) string {
	return fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport: {uds: {udsName: %s}}
`, sock)
}

// startControllers runs kube-controller-manager and kube-scheduler on loopback.
func (c *Cluster) startControllers() error {
	cp := c.CP
	kcm, err := startProcess(cp.Dir, "kube-controller-manager", filepath.Join(cp.Bins, "kube-controller-manager"),
		"--kubeconfig="+cp.AdminKubeconfig, "--secure-port=0", "--leader-elect=false",
		"--service-account-private-key-file="+cp.SAKey, "--root-ca-file="+cp.PKI.CAFile, "--use-service-account-credentials=true",
		"--flex-volume-plugin-dir="+filepath.Join(cp.Dir, "flexvolume"), "--controllers=*,-bootstrapsigner,-tokencleaner")
	if err != nil {
		return err
	}
	c.procs = append(c.procs, kcm)
	sched, err := startProcess(cp.Dir, "kube-scheduler", filepath.Join(cp.Bins, "kube-scheduler"),
		"--kubeconfig="+cp.AdminKubeconfig, "--secure-port=0", "--leader-elect=false")
	if err != nil {
		return err
	}
	c.procs = append(c.procs, sched)
	return nil
}

func (c *Cluster) addNode(ctx context.Context, vn *vnet.Node) error {
	cp := c.CP
	kc, err := cp.KubeconfigAt(c.Server, "kubelet-"+vn.Name, "system:node:"+vn.Name, "system:nodes")
	if err != nil {
		return err
	}
	pc, err := cp.KubeconfigAt(c.Server, "kube-proxy-"+vn.Name, "system:kube-proxy")
	if err != nil {
		return err
	}
	n, err := StartNode(ctx, NodeConfig{Name: vn.Name, Dir: filepath.Join(vn.Dir, "k8s"), NetNS: vn.NS.Path(), IP: vn.Primary,
		Kubeconfig: kc, ProxyKubeconfig: pc, CAFile: cp.PKI.CAFile, Bins: cp.Bins, SandboxImage: WorkloadImage,
		Images: []string{c.Opts.Images.Node, c.Opts.Images.Workload}, ClusterCIDR: c.VNet.MockCfg.Subnet.String(),
		CgroupRoot: "/" + c.Opts.Prefix + "-" + vn.Name, HostPlugins: c.Opts.Images.HostPlugins,
		RefSubnet: fmt.Sprintf("10.200.%d.0/24", len(c.Nodes)+1)})
	if n != nil {
		c.Nodes = append(c.Nodes, n)
	}
	return err
}

// WaitNodes waits until every node is registered, and Ready when ready is set.
func (c *Cluster) WaitNodes(ctx context.Context, ready bool, within time.Duration) error {
	var last string
	err := Poll(within, func() bool {
		last = ""
		for _, n := range c.Nodes {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			node, err := c.CP.Client.CoreV1().Nodes().Get(cctx, n.Cfg.Name, metav1.GetOptions{})
			cancel()
			if err != nil {
				last = fmt.Sprintf("%s: %v", n.Cfg.Name, err)
				return false
			}
			if ready && !NodeReady(node) {
				last = n.Cfg.Name + " not Ready"
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("nodes (ready=%v): %s: %w", ready, last, err)
	}
	return nil
}

// NodeReady reports the node's Ready condition.
func NodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ConfigMapName is the optional ConfigMap cns/deploy/daemonset.yaml reads flags from.
const ConfigMapName = "cns-config"

// Deploy installs vnet-cni as a user does: the ConfigMap cns-config (cns's flags as CNS_*
// variables: the ARM endpoint of the emulated VNet, and extra), then the repository's
// manifests, unmodified, with kubectl apply.
func (c *Cluster) Deploy(ctx context.Context, flags map[string]string) error {
	data := map[string]string{cns.EnvName("arm-endpoint"): c.VNet.ARMURL}
	for k, v := range flags {
		data[cns.EnvName(k)] = v
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName, Namespace: "kube-system"}, Data: data}
	if _, err := c.CP.Client.CoreV1().ConfigMaps("kube-system").Create(ctx, cm, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	dir := filepath.Join(c.Opts.WorkDir, "manifests")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	args := []string{"apply"}
	for _, f := range deploy.Files {
		b, err := deploy.Manifests.ReadFile(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			return err
		}
		args = append(args, "-f", filepath.Join(dir, f))
	}
	_, err := c.CP.Kubectl(ctx, args...)
	return err
}

// Logs returns the tails of every process log, for a failed test.
func (c *Cluster) Logs(max int) string {
	var b strings.Builder
	if c.CP != nil {
		for _, p := range append(append([]*process{}, c.CP.procs...), c.procs...) {
			fmt.Fprintf(&b, "--- %s (tail) ---\n%s\n", p.name, p.tail(max))
		}
	}
	for _, n := range c.Nodes {
		b.WriteString(n.Logs(max))
	}
	return b.String()
}

// Close removes everything: nodes (their containers, containerd, mounts, cgroups), the
// controllers, the control plane, the VNet's namespaces, and WorkDir. Safe to call twice.
func (c *Cluster) Close() error {
	var errs []error
	for _, n := range c.Nodes {
		errs = append(errs, n.Close())
	}
	c.Nodes = nil
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(10 * time.Second)
	}
	c.procs = nil
	for _, cl := range c.closers {
		_ = cl.Close()
	}
	c.closers = nil
	if c.CP != nil {
		c.CP.Close()
		c.CP = nil
	}
	if c.VNet != nil {
		errs = append(errs, c.VNet.Close())
		c.VNet = nil
	}
	if c.Opts.WorkDir != "" {
		errs = append(errs, os.RemoveAll(c.Opts.WorkDir))
	}
	return errors.Join(errs...)
}
