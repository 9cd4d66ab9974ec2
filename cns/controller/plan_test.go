package controller

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	v1 "github.com/vnet-cni/vnet-cni/cns/api/v1alpha1"
	"github.com/vnet-cni/vnet-cni/cns/cloud"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func TestPlanFor(t *testing.T) {
	held := addrs("10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8")
	for _, tc := range []struct {
		name       string
		requested  int32
		notInUse   []string
		maxIPs     int
		foreign    int
		wantAdd    int
		wantRemove []netip.Addr
	}{
		{name: "already satisfied writes nothing", requested: 4},
		{name: "grows by the difference", requested: 10, wantAdd: 6},
		{name: "a lower count never removes an unlisted address", requested: 1},
		{name: "removes only listed addresses it holds", requested: 3, notInUse: []string{"10.0.0.6", "10.0.0.99"}, wantRemove: addrs("10.0.0.6")},
		{name: "remove and add fold into one write", requested: 5, notInUse: []string{"10.0.0.5", "10.0.0.7"}, wantAdd: 3, wantRemove: addrs("10.0.0.5", "10.0.0.7")},
		{name: "duplicates and garbage are ignored", requested: 3, notInUse: []string{"10.0.0.8", "10.0.0.8", "nonsense"}, wantRemove: addrs("10.0.0.8")},
		{name: "capped at the NIC limit", requested: 255, maxIPs: 250, wantAdd: 246},
		{name: "foreign configurations count against max IPs", requested: 250, maxIPs: 250, foreign: 10, wantAdd: 236},
		{name: "and against Azure's 256 per NIC without a max", requested: 255, foreign: 5, wantAdd: 246},
		{name: "foreign ones filling the room leave nothing to add", requested: 8, maxIPs: 10, foreign: 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nic := cloud.NIC{Secondaries: held}
			for i := range tc.foreign {
				nic.Foreign = append(nic.Foreign, cloud.ForeignConfig{Name: fmt.Sprintf("web-%d", i)})
			}
			p := PlanFor(v1.NodeNetworkConfigSpec{RequestedIPCount: tc.requested, IPsNotInUse: tc.notInUse}, nic, tc.maxIPs)
			if p.Add != tc.wantAdd || !slices.Equal(p.Remove, tc.wantRemove) {
				t.Fatalf("plan = add %d remove %v, want add %d remove %v", p.Add, p.Remove, tc.wantAdd, tc.wantRemove)
			}
		})
	}
}
