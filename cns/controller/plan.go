package controller

import (
	"net/netip"
	"slices"

	v1 "github.com/vnet-cni/vnet-cni/cns/api/v1alpha1"
	"github.com/vnet-cni/vnet-cni/cns/cloud"
	"github.com/vnet-cni/vnet-cni/ipampool"
)

// Plan is the one NIC write that brings the cloud to what a spec asks for.
type Plan struct {
	Add    int
	Remove []netip.Addr
}

// Empty reports whether the NIC already holds what the spec asks for.
func (p Plan) Empty() bool { return p.Add == 0 && len(p.Remove) == 0 }

// PlanFor decides the write for spec against the NIC as it is now. It removes only addresses
// the node listed in IPsNotInUse that the NIC holds: an address the node did not list is never
// removed, even when the NIC holds more than requested. It adds what is missing to reach
// RequestedIPCount, capped at maxIPs minus the NIC's foreign ip configurations (which take room
// on the NIC and are never touched) and at what the NIC itself allows. Deciding against a fresh read makes it idempotent: a
// write that landed before a crash is not planned again.
func PlanFor(spec v1.NodeNetworkConfigSpec, nic cloud.NIC, maxIPs int) Plan {
	var p Plan
	for _, s := range spec.IPsNotInUse {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		if _, ok := slices.BinarySearchFunc(nic.Secondaries, a, netip.Addr.Compare); ok && !slices.Contains(p.Remove, a) {
			p.Remove = append(p.Remove, a)
		}
	}
	slices.SortFunc(p.Remove, netip.Addr.Compare)
	keep := len(nic.Secondaries) - len(p.Remove)
	want := int(spec.RequestedIPCount)
	if maxIPs > 0 {
		want = min(want, maxIPs-len(nic.Foreign))
	}
	want = min(want, ipampool.NICHardLimit-1-len(nic.Foreign)) // the primary takes one
	p.Add = max(0, want-keep)
	return p
}
