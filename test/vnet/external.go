package vnet

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// AddExternalHost makes a namespace beyond the VNet router holding addr, an address outside
// the VNet (a host on the internet): the router routes addr to it, and it answers everything
// through the router. Close removes it with the VNet.
func (v *VNet) AddExternalHost(tag string, addr netip.Addr) (ns.NetNS, error) {
	h, err := v.newNS(tag)
	if err != nil {
		return nil, err
	}
	peer := "x-" + tag
	if len(peer) > 15 {
		peer = peer[:15]
	}
	err = h.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: peer,
			PeerNamespace: netlink.NsFd(int(v.NS.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("veth to the router: %w", err)
		}
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(eth0); err != nil {
			return err
		}
		if lo, err := netlink.LinkByName("lo"); err == nil {
			_ = netlink.LinkSetUp(lo)
		}
		gw := &net.IPNet{IP: v.Gateway.AsSlice(), Mask: net.CIDRMask(32, 32)}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: gw, Scope: netlink.SCOPE_LINK}); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: v.Gateway.AsSlice()})
	})
	if err != nil {
		return h, err
	}
	return h, v.NS.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(peer)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)},
			Scope: netlink.SCOPE_LINK})
	})
}
