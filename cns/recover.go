package cns

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vnet-cni/vnet-cni/cns/store"
	"github.com/vnet-cni/vnet-cni/ipampool"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
)

// recoverFromDatapath rebuilds allocations from the node's datapath (cns runs in the node's
// network namespace): every host veth labelled by the plugin, with its IP/32 route, is a
// live pod. It is used when the state file was lost, so that no live pod's address is
// handed out again.
func recoverFromDatapath(now time.Time) ([]store.Allocation, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []store.Allocation
	for _, l := range links {
		// v2 labels carry the network; legacy ones do not (Restore migrates those).
		network, cid, ifname, _, ok := cnsv1.ParseHostVethAlias(l.Attrs().Alias)
		if !ok {
			continue
		}
		routes, err := netlink.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return nil, fmt.Errorf("routes of %s: %w", l.Attrs().Name, err)
		}
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			if ones, _ := r.Dst.Mask.Size(); ones != 32 {
				continue
			}
			a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
			out = append(out, store.Allocation{Addr: a, AssignedAt: now,
				Owner: ipampool.Owner{Key: ipampool.Key{ContainerID: cid, IfName: ifname}, Network: network}})
			break
		}
	}
	return out, nil
}
