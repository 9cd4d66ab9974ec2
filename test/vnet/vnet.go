// Package vnet builds an emulated Azure VNet out of network namespaces, for tests and the
// demo:
//
//	pod ─veth─ node1 ─veth─┐                 ┌─veth─ node2 ─veth─ pod
//	           cns          ├─── vnet netns ──┤        cns
//	                        │ gateway on lo, proxy ARP, mockarm on the gateway address,
//	                        │ fabric: POD/32 via NODE_PRIMARY (programmed by mockarm)
//
// Each node holds its primary address (allocated by mockarm from the subnet) on eth0 with the
// subnet's prefix and a default route to the gateway, runs a real cns process and adds pods
// with the vnet-cni binary through libcni, as a container runtime does. Nothing touches the
// root namespace; Close removes every namespace, process and file it made.
package vnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vnet-cni/vnet-cni/test/mockarm"
)

// Options describe an emulated VNet.
type Options struct {
	Prefix  string   // namespace name prefix, unique per run (TestPrefix, or "vdemo")
	Nodes   int      // number of nodes
	BinDir  string   // holds cns and vnet-cni
	WorkDir string   // state, sockets, logs; created
	CNSArgs []string // extra cns flags for every node
	// ScaleSetNodes of the nodes (the first ones) are instances of a uniform scale set
	// (their NIC is written through the scale-set VM); the others are standalone VMs.
	ScaleSetNodes int
	// NoCNS leaves the nodes without a cns process: something else runs it (the Kubernetes
	// harness runs it from the DaemonSet, under kubelet).
	NoCNS bool
	Mock  func(*mockarm.Config)
	Log   *slog.Logger
}

// VNet is a running emulated VNet.
type VNet struct {
	opts    Options
	NS      ns.NetNS
	Mock    *mockarm.Server
	MockCfg mockarm.Config
	ARMURL  string // mockarm as nodes see it: on the gateway address
	Gateway netip.Addr
	Nodes   []*Node

	cancel  context.CancelFunc
	served  chan struct{}
	armAddr string
	imdsL   net.Listener // IMDS on 169.254.169.254:80 in the vnet namespace
	mu      sync.Mutex
	names   []string // namespaces made, in creation order
}

// New builds the VNet and its nodes, and starts cns on each. On error everything made so
// far is removed.
func New(opts Options) (v *VNet, err error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	// Socket paths derive from WorkDir, and gRPC reads unix://relative/path as an authority;
	// each node's cns runs in its own directory, so a relative BinDir would name nothing.
	if opts.WorkDir, err = filepath.Abs(opts.WorkDir); err != nil {
		return nil, err
	}
	if opts.BinDir, err = filepath.Abs(opts.BinDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.WorkDir, 0o755); err != nil {
		return nil, err
	}
	v = &VNet{opts: opts}
	defer func() {
		if err != nil {
			err = errors.Join(err, v.Close())
		}
	}()
	if v.NS, err = v.newNS("vnet"); err != nil {
		return v, err
	}
	mc := mockarm.DefaultConfig()
	mc.StatePath = filepath.Join(opts.WorkDir, "mockarm.json")
	mc.Log = opts.Log.With("component", "mockarm")
	mc.Fabric = &mockarm.NetnsFabric{NS: v.NS}
	// As on Azure: ARM wants a token, and nodes get theirs from IMDS with their managed identity.
	mc.RequireToken = true
	if opts.Mock != nil {
		opts.Mock(&mc)
	}
	v.MockCfg, v.Gateway = mc, mockarm.Gateway(mc.Subnet)
	if err := v.setupRouter(); err != nil {
		return v, err
	}
	if v.Mock, err = mockarm.New(mc); err != nil {
		return v, err
	}
	l, err := mockarm.ListenInNS(v.NS, net.JoinHostPort(v.Gateway.String(), "0"))
	if err != nil {
		return v, fmt.Errorf("listen on the gateway: %w", err)
	}
	v.armAddr = l.Addr().String()
	v.ARMURL = "http://" + v.armAddr
	if v.imdsL, err = v.listenIMDS(); err != nil {
		l.Close()
		return v, err
	}
	v.serveMock(l)
	for i := range opts.Nodes {
		if err := v.addNode(i + 1); err != nil {
			return v, fmt.Errorf("node %d: %w", i+1, err)
		}
	}
	return v, nil
}

func (v *VNet) serveMock(l net.Listener) {
	ctx, cancel := context.WithCancel(context.Background())
	v.cancel, v.served = cancel, make(chan struct{})
	m, il := v.Mock, v.imdsL
	imdsDone := make(chan struct{})
	go func() { defer close(imdsDone); _ = m.ServeIMDS(ctx, il) }()
	go func() { defer close(v.served); _ = m.Serve(ctx, l); <-imdsDone }()
}

// listenIMDS opens IMDS's listener on the link-local address the vnet router holds.
func (v *VNet) listenIMDS() (net.Listener, error) {
	l, err := mockarm.ListenInNS(v.NS, net.JoinHostPort(mockarm.IMDSAddr.String(), "80"))
	if err != nil {
		return nil, fmt.Errorf("listen for IMDS: %w", err)
	}
	return l, nil
}

// RestartMock stops mockarm abruptly and starts a new one from its state file on the same
// address, as a crash and restart of the ARM front end would.
func (v *VNet) RestartMock() error {
	v.cancel()
	<-v.served
	m, err := mockarm.New(v.MockCfg)
	if err != nil {
		return err
	}
	l, err := mockarm.ListenInNS(v.NS, v.armAddr)
	if err != nil {
		return err
	}
	if v.imdsL, err = v.listenIMDS(); err != nil {
		l.Close()
		return err
	}
	v.Mock = m
	v.serveMock(l)
	return nil
}

func (v *VNet) newNS(tag string) (ns.NetNS, error) {
	name := v.opts.Prefix + "-" + tag
	n, err := newNamedNS(name)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	v.names = append(v.names, name)
	v.mu.Unlock()
	return n, nil
}

// setupRouter makes the vnet namespace a router that owns the gateway address and IMDS's
// link-local address: nodes reach both through their default route, as Azure VMs do.
func (v *VNet) setupRouter() error {
	return v.NS.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: v.Gateway.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return fmt.Errorf("gateway address: %w", err)
		}
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: mockarm.IMDSAddr.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return fmt.Errorf("IMDS address: %w", err)
		}
		return sysctl("net/ipv4/ip_forward", "1")
	})
}

func sysctl(key, val string) error {
	return os.WriteFile(filepath.Join("/proc/sys", key), []byte(val), 0o644)
}

// Close stops every cns, mockarm, and removes every namespace and the work directory's
// sockets. It is safe to call more than once.
func (v *VNet) Close() error {
	var errs []error
	for _, n := range v.Nodes {
		errs = append(errs, n.StopCNS())
	}
	if v.cancel != nil {
		v.cancel()
		<-v.served
		v.cancel = nil
	}
	if v.NS != nil {
		v.NS.Close()
	}
	v.mu.Lock()
	names := v.names
	v.names = nil
	v.mu.Unlock()
	for i := len(names) - 1; i >= 0; i-- { // pods, then nodes, then the vnet
		errs = append(errs, deleteNamedNS(names[i]))
	}
	return errors.Join(errs...)
}

// FabricRoutes returns the /32 routes of the vnet namespace: address → next hop.
func (v *VNet) FabricRoutes() (map[netip.Addr]netip.Addr, error) {
	out := map[netip.Addr]netip.Addr{}
	err := v.NS.Do(func(ns.NetNS) error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst == nil || r.Gw == nil {
				continue
			}
			if ones, _ := r.Dst.Mask.Size(); ones != 32 {
				continue
			}
			a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
			gw, _ := netip.AddrFromSlice(r.Gw.To4())
			out[a] = gw
		}
		return nil
	})
	return out, err
}
