package plugin

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnet-cni/vnet-cni/proto/cns/v1/contract"
)

// podGateway is the link-local next hop every pod routes through. It is not on any link: the
// pod reaches it through a permanent neighbour entry pointing at the host veth's MAC, so no
// ARP is needed and the pod never learns the node's addresses.
var podGateway = net.IPv4(169, 254, 1, 1).To4()

// hostVethPrefix marks host veths as ours (GC removes only these).
const hostVethPrefix = "vnet"

// HostVethName is the node-side veth of an attachment: a stable hash of container ID and
// ifname, so DEL and GC find it without state, and it fits IFNAMSIZ (15).
func HostVethName(containerID, ifname string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifname))
	return hostVethPrefix + hex.EncodeToString(sum[:])[:11]
}

// podNet is the pod's side of the datapath as cns granted it.
type podNet struct {
	IP     netip.Addr
	Routes []netip.Prefix
	MTU    int
}

func ipNet32(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// links is one call's netlink access to the two namespaces: one socket in the node namespace
// and one in the pod's, each reused for every request of the call. The pod's socket is opened
// inside the pod namespace once; requests through it need no switch of this thread.
type links struct {
	host, pod netlinksafe.Handle
	hostNS    ns.NetNS
}

// openLinks opens the sockets; hostNS is the current namespace.
func openLinks(hostNS, podNS ns.NetNS) (*links, error) {
	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket in the node namespace: %w", err)
	}
	// The socket is made inside podNS.Do, which discards its thread if it cannot switch back
	// (netlink's NewHandleAt would hand such a thread, still in the pod, back to the
	// scheduler, and later /proc/sys writes could land in the pod). A socket stays in the
	// namespace it was made in.
	var pod netlinksafe.Handle
	err = podNS.Do(func(ns.NetNS) error {
		var err error
		pod, err = netlinksafe.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		host.Close()
		return nil, fmt.Errorf("netlink socket in %s: %w", podNS.Path(), err)
	}
	return &links{host: host, pod: pod, hostNS: hostNS}, nil
}

func (l *links) Close() {
	l.host.Close()
	l.pod.Close()
}

// linkExists reports whether name exists in h's namespace, and the link when it does.
func linkExists(h netlinksafe.Handle, name string) (netlink.Link, bool, error) {
	link, err := h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	switch {
	case err == nil:
		return link, true, nil
	case errors.As(err, &nf):
		return nil, false, nil
	}
	return nil, false, err
}

// veth is the pair one ADD made, with what phase one set on it.
type veth struct {
	pod              *netlink.Veth // the pod side, in the pod namespace
	host             netlink.Link  // the node side
	hostMAC, podMAC  net.HardwareAddr
	mtu              int
	ifname, hostName string
}

// buildVeth is the half of the datapath that needs no address, so ADD runs it while cns
// answers: the pair, created up from inside the pod with its peer placed in the node namespace
// (both MACs chosen here, so nothing is looked up for the neighbour entry or the result); the
// pod's on-link route to the gateway and its permanent neighbour entry; the node side up and
// labelled. A nil veth means nothing was made. An ifname or host veth that appeared since the
// pre-checks (another attachment's interface, or a concurrent ADD of the same key) is
// errExists, with nothing made.
func (l *links) buildVeth(ifname, hostName, alias string, mtu int) (*veth, error) {
	hostMAC, podMAC := vethMACs(hostName)
	pv := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ifname, MTU: mtu, TxQLen: -1, HardwareAddr: podMAC, Flags: net.FlagUp},
		PeerName: hostName, PeerHardwareAddr: hostMAC, PeerTxQLen: -1, PeerNamespace: netlink.NsFd(int(l.hostNS.Fd()))}
	if err := l.pod.LinkAdd(pv); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("%w: create veth %s/%s: %w", errExists, ifname, hostName, err)
		}
		return nil, fmt.Errorf("create veth %s/%s: %w", ifname, hostName, err)
	}
	v := &veth{pod: pv, hostMAC: hostMAC, podMAC: podMAC, mtu: mtu, ifname: ifname, hostName: hostName}
	if pv.Index == 0 {
		return v, fmt.Errorf("find %s after creating it", ifname)
	}
	gw := &net.IPNet{IP: podGateway, Mask: net.CIDRMask(32, 32)}
	if err := l.pod.RouteAdd(&netlink.Route{LinkIndex: pv.Index, Dst: gw, Scope: netlink.SCOPE_LINK}); err != nil {
		return v, fmt.Errorf("route %s dev %s: %w", podGateway, ifname, err)
	}
	err := l.pod.NeighSet(&netlink.Neigh{LinkIndex: pv.Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: podGateway, HardwareAddr: hostMAC})
	if err != nil {
		return v, fmt.Errorf("neighbour %s lladdr %s dev %s: %w", podGateway, hostMAC, ifname, err)
	}
	if v.host, err = l.host.LinkByName(hostName); err != nil {
		return v, fmt.Errorf("find host veth %s: %w", hostName, err)
	}
	if err := l.host.LinkSetUp(v.host); err != nil {
		return v, fmt.Errorf("set host veth %s up: %w", hostName, err)
	}
	if alias != "" {
		if err := l.host.LinkSetAlias(v.host, alias); err != nil {
			return v, fmt.Errorf("label host veth %s: %w", hostName, err)
		}
	}
	// The node routes this link itself: router advertisements from the pod must not install
	// IPv6 routes on it (no error when IPv6 is off).
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+hostName+"/accept_ra", []byte("0"), 0o644)
	return v, enableForwarding()
}

// address is the half that needs the grant: the MTU when cns's differs from the one the veth
// was made with, the pod's address and routes, and the node's /32 route to the pod.
func (l *links) address(v *veth, p podNet) error {
	if p.MTU != v.mtu {
		if err := l.pod.LinkSetMTU(v.pod, p.MTU); err != nil {
			return fmt.Errorf("mtu %d on %s: %w", p.MTU, v.ifname, err)
		}
		if err := l.host.LinkSetMTU(v.host, p.MTU); err != nil {
			return fmt.Errorf("mtu %d on %s: %w", p.MTU, v.hostName, err)
		}
		v.mtu = p.MTU
	}
	if err := l.pod.AddrAdd(v.pod, &netlink.Addr{IPNet: ipNet32(p.IP)}); err != nil {
		return fmt.Errorf("add %s/32 to %s: %w", p.IP, v.ifname, err)
	}
	for _, r := range p.Routes {
		if err := l.pod.RouteAdd(&netlink.Route{LinkIndex: v.pod.Index, Dst: prefixNet(r), Gw: podGateway}); err != nil {
			return fmt.Errorf("route %s via %s: %w", r, podGateway, err)
		}
	}
	err := l.host.RouteReplace(&netlink.Route{LinkIndex: v.host.Attrs().Index, Dst: ipNet32(p.IP), Scope: netlink.SCOPE_LINK})
	if err != nil {
		return fmt.Errorf("route %s/32 dev %s: %w", p.IP, v.hostName, err)
	}
	return nil
}

// remove deletes the pair v (deleting one end deletes the other, and the host route with it).
func (l *links) remove(v *veth) error {
	if err := l.pod.LinkDel(v.pod); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete veth %s/%s: %w", v.ifname, v.hostName, err)
	}
	return nil
}

// interfaces describes both ends for the result.
func (v *veth) interfaces() (hostIf, contIf net.Interface) {
	return net.Interface{Index: v.host.Attrs().Index, MTU: v.mtu, Name: v.hostName, HardwareAddr: v.hostMAC},
		net.Interface{Index: v.pod.Index, MTU: v.mtu, Name: v.ifname, HardwareAddr: v.podMAC}
}

// vethMACs derives both ends' MAC addresses from the host veth's name (itself a hash of the
// attachment): locally administered unicast, stable across retries, known without asking the
// kernel. Each veth is its own two-host link, so uniqueness matters only between its ends.
func vethMACs(hostName string) (host, pod net.HardwareAddr) {
	sum := sha256.Sum256([]byte(hostName))
	host, pod = make(net.HardwareAddr, 6), make(net.HardwareAddr, 6)
	copy(host, sum[0:6])
	copy(pod, sum[6:12])
	host[0] = host[0]&0xfc | 0x02
	pod[0] = pod[0]&0xfc | 0x02
	if host.String() == pod.String() {
		pod[5] ^= 1
	}
	return host, pod
}

// enableForwarding sets ip_forward in the current (node) namespace, writing only if needed.
func enableForwarding() error {
	const path = "/proc/sys/net/ipv4/ip_forward"
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding in the node namespace: %w", err)
	}
	return nil
}

// teardownDatapath removes an attachment through nl, a socket in the node namespace; host is
// its host veth, nil when there is none. Deleting the host veth removes its peer in the pod
// and the host route with it. A missing link or namespace is success.
func teardownDatapath(nl netlinksafe.Handle, host netlink.Link, netnsPath, ifname, hostName string) error {
	if host != nil {
		if err := nl.LinkDel(host); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("delete host veth %s: %w", hostName, err)
		}
		return nil
	}
	// No host veth: a pod-side leftover can only be ours if it is a veth whose peer is gone.
	if netnsPath == "" {
		return nil
	}
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(ifname)
		if err != nil {
			return nil
		}
		if v, ok := l.(*netlink.Veth); ok && peerIsHere(v, hostName) {
			return netlink.LinkDel(l)
		}
		return nil
	})
	var notExist ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	if errors.As(err, &notExist) || errors.As(err, &notNS) {
		return nil
	}
	return err
}

// peerIsHere tells a pod-side veth this attachment left behind: its peer, named hostName,
// never left the pod (an ADD cut short before placing it). A veth whose peer is in the node
// namespace under another name is another attachment's, and a DEL of this key leaves it.
func peerIsHere(v *netlink.Veth, hostName string) bool {
	idx, err := netlink.VethPeerIndex(v)
	if err != nil {
		return false
	}
	peer, err := netlink.LinkByIndex(idx)
	return err == nil && peer.Attrs().Name == hostName
}

// checkDatapath compares the real datapath with what ADD built and names every difference.
func checkDatapath(podNS ns.NetNS, ifname, hostName string, addr netip.Addr) error {
	var missing []string
	host, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		missing = append(missing, fmt.Sprintf("host veth %s", hostName))
	} else {
		if host.Attrs().Flags&net.FlagUp == 0 {
			missing = append(missing, fmt.Sprintf("host veth %s is down", hostName))
		}
		if !hasRoute(host, ipNet32(addr), nil) {
			missing = append(missing, fmt.Sprintf("host route %s/32 dev %s", addr, hostName))
		}
	}
	err = podNS.Do(func(ns.NetNS) error {
		link, err := netlinksafe.LinkByName(ifname)
		if err != nil {
			missing = append(missing, fmt.Sprintf("pod interface %s", ifname))
			return nil
		}
		idx := link.Attrs().Index
		if link.Attrs().Flags&net.FlagUp == 0 {
			missing = append(missing, fmt.Sprintf("pod interface %s is down", ifname))
		}
		addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		found := false
		for _, a := range addrs {
			ones, _ := a.Mask.Size()
			found = found || (a.IP.Equal(addr.AsSlice()) && ones == 32)
		}
		if !found {
			missing = append(missing, fmt.Sprintf("address %s/32 on %s", addr, ifname))
		}
		if !hasRoute(link, &net.IPNet{IP: podGateway, Mask: net.CIDRMask(32, 32)}, nil) {
			missing = append(missing, fmt.Sprintf("route %s dev %s scope link", podGateway, ifname))
		}
		if !hasRoute(link, nil, podGateway) {
			missing = append(missing, fmt.Sprintf("default route via %s", podGateway))
		}
		neighs, err := netlink.NeighList(idx, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		ok := false
		for _, n := range neighs {
			if n.IP.Equal(podGateway) && n.State&netlink.NUD_PERMANENT != 0 && host != nil &&
				n.HardwareAddr.String() == host.Attrs().HardwareAddr.String() {
				ok = true
			}
		}
		if !ok {
			missing = append(missing, fmt.Sprintf("permanent neighbour %s -> host veth MAC on %s", podGateway, ifname))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: %w", errCheck, err)
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing %s", errCheck, strings.Join(missing, "; "))
	}
	return nil
}

// hasRoute looks for a route on link to dst (nil: the default route) via gw (nil: any).
func hasRoute(link netlink.Link, dst *net.IPNet, gw net.IP) bool {
	routes, err := netlinksafe.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		return false
	}
	for _, r := range routes {
		isDefault := r.Dst == nil
		if r.Dst != nil {
			ones, _ := r.Dst.Mask.Size()
			isDefault = ones == 0 && r.Dst.IP.IsUnspecified()
		}
		switch {
		case dst == nil && !isDefault:
			continue
		case dst != nil && (r.Dst == nil || r.Dst.String() != dst.String()):
			continue
		case gw != nil && !r.Gw.Equal(gw):
			continue
		}
		return true
	}
	return false
}

// BuildDatapath builds the transparent datapath for ip with no IPAM, from the node
// namespace (the current one): the kernel floor that make bench compares ADD against.
func BuildDatapath(hostNS, podNS ns.NetNS, ifname, hostName string, ip netip.Addr, mtu int) error {
	l, err := openLinks(hostNS, podNS)
	if err != nil {
		return err
	}
	defer l.Close()
	v, err := l.buildVeth(ifname, hostName, contract.HostVethAliasPrefix+"floor/"+ifname, mtu)
	if err == nil {
		err = l.address(v, podNet{IP: ip, MTU: mtu, Routes: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}})
	}
	if err != nil && v != nil {
		err = errors.Join(err, l.remove(v))
	}
	return err
}

// RemoveDatapath is the DEL side of BuildDatapath.
func RemoveDatapath(netnsPath, ifname, hostName string) error {
	_, err := removeDatapath("", netnsPath, ifname, hostName)
	return err
}

// removeDatapath tears an attachment down, unless its host veth is labelled for a network
// other than network ("" checks no label): then it reports that network's and leaves it. One
// netlink socket and one lookup of the host veth serve the label check and the teardown.
func removeDatapath(network, netnsPath, ifname, hostName string) (othersAttachment bool, err error) {
	nl, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return false, fmt.Errorf("netlink socket in the node namespace: %w", err)
	}
	defer nl.Close()
	host, exists, err := linkExists(nl, hostName)
	if err != nil {
		return false, fmt.Errorf("look up host veth %s: %w", hostName, err)
	}
	if exists && network != "" && otherNetwork(host.Attrs().Alias, network) {
		return true, nil
	}
	return false, teardownDatapath(nl, host, netnsPath, ifname, hostName)
}
