package vnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
	"github.com/vnet-cni/vnet-cni/test/stack"
)

// Node is one emulated VM: a namespace with its primary address on eth0 and a cns process.
type Node struct {
	v       *VNet
	Name    string
	NS      ns.NetNS
	Primary netip.Addr
	Dir     string
	Socket  string
	NIC     string // the NIC's name
	NICID   string // the NIC's ARM ID
	// ScaleSet and Instance place a scale-set node; empty for a standalone VM.
	ScaleSet, Instance string
	Args               []string // cns's command line, the same on every node

	cmd  *exec.Cmd
	conn *grpc.ClientConn
	IPAM cnsv1grpc.IPAMServiceClient
	Pool cnsv1grpc.PoolServiceClient
	list *libcni.NetworkConfigList
	cni  *libcni.CNIConfig
}

// addNode builds node i and starts its cns. The node joins v.Nodes before anything can fail,
// so Close always stops what was started.
func (v *VNet) addNode(i int) error {
	n := &Node{v: v, Name: fmt.Sprintf("node%d", i), Dir: filepath.Join(v.opts.WorkDir, fmt.Sprintf("node%d", i))}
	n.Socket, n.NIC = filepath.Join(n.Dir, "cns.sock"), n.Name+"-nic"
	v.Nodes = append(v.Nodes, n)
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		return err
	}
	var err error
	sub, rg := v.MockCfg.Subscription, v.MockCfg.ResourceGroup
	if i <= v.opts.ScaleSetNodes {
		n.ScaleSet, n.Instance, n.NIC = ScaleSetName, fmt.Sprint(i-1), ScaleSetName+"-nic"
		n.NICID = mockarm.ScaleSetNICID(sub, rg, n.ScaleSet, n.Instance, n.NIC)
		n.Primary, err = v.Mock.CreateScaleSetVM(sub, rg, n.ScaleSet, n.Instance, n.NIC, netip.Addr{})
	} else {
		n.NICID = mockarm.NICID(sub, rg, n.NIC)
		n.Primary, err = v.Mock.CreateVM(sub, rg, n.Name, netip.Addr{})
	}
	if err != nil {
		return err
	}
	if n.NS, err = v.newNS(n.Name); err != nil {
		return err
	}
	if err := n.wire(); err != nil {
		return err
	}
	list := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"vnet","plugins":[{"type":"vnet-cni","cnsSocket":%q,"releaseSpool":%q,"requestTimeout":"30s"}]}`,
		n.Socket, filepath.Join(n.Dir, "spool"))
	if n.list, err = libcni.NetworkConfFromBytes([]byte(list)); err != nil {
		return err
	}
	// An explicit exec: libcni fills a nil one in lazily, which races under concurrent ADDs.
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{v.opts.BinDir}, filepath.Join(n.Dir, "cni-cache"), exec)
	if v.opts.NoCNS {
		return nil
	}
	return n.StartCNS()
}

// wire connects the node to the vnet router: eth0 in the node, <node> in the vnet.
func (n *Node) wire() error {
	v := n.v
	prefixLen := v.MockCfg.Subnet.Bits()
	err := n.NS.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: n.Name,
			PeerNamespace: netlink.NsFd(int(v.NS.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("veth to the vnet: %w", err)
		}
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: n.Primary.AsSlice(), Mask: net.CIDRMask(prefixLen, 32)}}); err != nil {
			return err
		}
		for _, l := range []netlink.Link{eth0} {
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		if lo, err := netlink.LinkByName("lo"); err == nil {
			_ = netlink.LinkSetUp(lo)
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: v.Gateway.AsSlice()}); err != nil {
			return fmt.Errorf("default route: %w", err)
		}
		return sysctl("net/ipv4/ip_forward", "1")
	})
	if err != nil {
		return err
	}
	return v.NS.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(n.Name)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		// Proxy ARP answers the node's ARP for any VNet address routed elsewhere, as the
		// Azure fabric answers a VM's ARP for the whole subnet.
		if err := sysctl("net/ipv4/conf/"+n.Name+"/proxy_arp", "1"); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: n.Primary.AsSlice(), Mask: net.CIDRMask(32, 32)},
			Scope: netlink.SCOPE_LINK})
	})
}

// ScaleSetName is the uniform scale set of the VNet's scale-set nodes.
const ScaleSetName = "vnet-pool"

// StartCNS starts the node's cns inside its namespace and waits until it is ready. Every
// node runs the same command line, as a DaemonSet would: no subscription, resource group or
// NIC; cns learns them from IMDS and ARM, with a managed identity token from IMDS. Paths are
// relative to the node's directory, which stands for the node's own filesystem.
func (n *Node) StartCNS() error {
	args := append([]string{"--arm-endpoint", n.v.ARMURL, "--socket", "cns.sock", "--state", "cns.db",
		"--release-spool", "spool", "--backoff-max", "2s", "--bootstrap-timeout", "15s"}, n.v.opts.CNSArgs...)
	n.Args = args
	logf, err := os.OpenFile(filepath.Join(n.Dir, "cns.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(n.v.opts.BinDir, "cns"), args...)
	cmd.Stdout, cmd.Stderr, cmd.Dir = logf, logf, n.Dir
	// A child forked from a thread locked in the node namespace starts in it.
	if err := n.NS.Do(func(ns.NetNS) error { return cmd.Start() }); err != nil {
		return fmt.Errorf("start cns on %s: %w", n.Name, err)
	}
	n.cmd = cmd
	_ = os.WriteFile(filepath.Join(n.Dir, "cns.pid"), []byte(fmt.Sprint(cmd.Process.Pid)), 0o644)
	if n.conn == nil {
		if n.conn, err = grpc.NewClient("unix://"+n.Socket, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			return err
		}
		n.IPAM, n.Pool = cnsv1grpc.NewIPAMServiceClient(n.conn), cnsv1grpc.NewPoolServiceClient(n.conn)
	}
	if stack.WaitCNSReady(n.IPAM, 20*time.Second) == nil {
		return nil
	}
	n.KillCNS()
	log, _ := os.ReadFile(filepath.Join(n.Dir, "cns.log"))
	return fmt.Errorf("cns on %s not ready within 20s; log:\n%s", n.Name, log)
}

// StopCNS stops the node's cns with SIGTERM (SIGKILL after 10 s).
func (n *Node) StopCNS() error {
	if n.cmd == nil {
		return nil
	}
	cmd := n.cmd
	n.cmd = nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			return err
		}
		return nil
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("cns on %s ignored SIGTERM for 10s", n.Name)
	}
}

// Pod is a pod attached by vnet-cni.
type Pod struct {
	Node *Node
	Name string
	NS   ns.NetNS
	IP   netip.Addr
	rt   *libcni.RuntimeConf
	ns   string
}

// AddPod makes a pod namespace and runs CNI ADD for it on the node.
func (n *Node) AddPod(ctx context.Context, name string) (*Pod, error) {
	podNS, err := n.v.newNS(n.Name + "-" + name)
	if err != nil {
		return nil, err
	}
	full := n.v.opts.Prefix + "-" + n.Name + "-" + name
	p := &Pod{Node: n, Name: name, NS: podNS, ns: full}
	if p.IP, err = n.Attach(ctx, strings.ReplaceAll(full, "-", ""), podNS, name); err != nil {
		podNS.Close()
		_ = deleteNamedNS(full)
		return nil, fmt.Errorf("ADD %s on %s: %w", name, n.Name, err)
	}
	p.rt = n.runtimeConf(strings.ReplaceAll(full, "-", ""), podNS, name)
	return p, nil
}

func (n *Node) runtimeConf(containerID string, podNS ns.NetNS, podName string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: containerID, NetNS: podNS.Path(), IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", podName}}}
}

// Attach runs CNI ADD for a sandbox in an existing pod namespace, as a runtime does for
// each new sandbox, and returns its address.
func (n *Node) Attach(ctx context.Context, containerID string, podNS ns.NetNS, podName string) (netip.Addr, error) {
	var ip netip.Addr
	err := n.NS.Do(func(ns.NetNS) error {
		res, err := n.cni.AddNetworkList(ctx, n.list, n.runtimeConf(containerID, podNS, podName))
		if err != nil {
			return err
		}
		r, err := current.NewResultFromResult(res)
		if err != nil || len(r.IPs) == 0 {
			return fmt.Errorf("result %v: %w", res, err)
		}
		ip, _ = netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
		return nil
	})
	return ip, err
}

// Detach runs CNI DEL for a sandbox.
func (n *Node) Detach(ctx context.Context, containerID string, podNS ns.NetNS) error {
	return n.NS.Do(func(ns.NetNS) error {
		return n.cni.DelNetworkList(ctx, n.list, n.runtimeConf(containerID, podNS, ""))
	})
}

// GC runs CNI GC with the given live sandboxes as the valid attachments.
func (n *Node) GC(ctx context.Context, live []string) error {
	args := &libcni.GCArgs{}
	for _, id := range live {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: id, IfName: "eth0"})
	}
	return n.NS.Do(func(ns.NetNS) error { return n.cni.GCNetworkList(ctx, n.list, args) })
}

// PID is the process ID of the node's cns, 0 when stopped.
func (n *Node) PID() int {
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// StartCNSIfStopped starts cns unless it runs.
func (n *Node) StartCNSIfStopped() error {
	if n.cmd != nil {
		return nil
	}
	return n.StartCNS()
}

// KillCNS kills the node's cns with SIGKILL: no shutdown code runs.
func (n *Node) KillCNS() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
	n.cmd = nil
}

// HostVeths lists the node's host-side veths of vnet-cni.
func (n *Node) HostVeths() ([]string, error) {
	var out []string
	err := n.NS.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		for _, l := range links {
			if _, ok := l.(*netlink.Veth); ok && strings.HasPrefix(l.Attrs().Name, "vnet") {
				out = append(out, l.Attrs().Name)
			}
		}
		return err
	})
	return out, err
}

// NewPodNS makes an empty pod namespace owned by the VNet (removed by Close).
func (n *Node) NewPodNS(tag string) (ns.NetNS, error) { return n.v.newNS(n.Name + "-" + tag) }

// Delete runs CNI DEL for the pod and removes its namespace.
func (p *Pod) Delete(ctx context.Context) error {
	err := p.Node.NS.Do(func(ns.NetNS) error { return p.Node.cni.DelNetworkList(ctx, p.Node.list, p.rt) })
	p.NS.Close()
	return errors.Join(err, deleteNamedNS(p.ns))
}

// ContainerID is the pod's CNI container ID.
func (p *Pod) ContainerID() string { return p.rt.ContainerID }
