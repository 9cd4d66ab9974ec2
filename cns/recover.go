package cns

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/vnet-cni/vnet-cni/cns/store"
	"github.com/vnet-cni/vnet-cni/ipampool"
	"github.com/vnet-cni/vnet-cni/proto/cns/v1/contract"
)

// recoverFromDatapath rebuilds allocations from the node's datapath (cns runs in the node's
// network namespace): every host veth labelled by the plugin, with its IP/32 route, is a
// live pod. It is used when the state file was lost, so that no live pod's address is
// handed out again. The dumps go through netlinksafe, which retries a dump the kernel
// interrupted (NLM_F_DUMP_INTR); after its last attempt it returns the possibly partial list
// without an error, so the datapath is read until two reads in a row agree.
func recoverFromDatapath(now time.Time) ([]store.Allocation, error) {
	const reads = 6
	prev, err := readDatapath(now)
	for range reads - 1 {
		if err != nil {
			return nil, err
		}
		cur, err2 := readDatapath(now)
		if err2 == nil && slices.Equal(prev, cur) {
			return cur, nil
		}
		prev, err = cur, err2
	}
	return nil, fmt.Errorf("the datapath kept changing while it was read (%d reads)", reads)
}

func readDatapath(now time.Time) ([]store.Allocation, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []store.Allocation
	for _, l := range links {
		// v2 labels carry the network; legacy ones do not (Restore migrates those).
		network, cid, ifname, _, ok := contract.ParseHostVethAlias(l.Attrs().Alias)
		if !ok {
			continue
		}
		routes, err := netlinksafe.RouteList(l, netlink.FAMILY_V4)
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
	slices.SortFunc(out, func(a, b store.Allocation) int { return a.Addr.Compare(b.Addr) })
	return out, nil
}
