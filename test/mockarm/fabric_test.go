package mockarm

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vnet-cni/vnet-cni/test/nettest"
)

// mockarm restarted from its state file must program the fabric for the ip configurations
// it already had, also when it starts before the nodes those routes lead to are reachable
// (make demo: mockarm first, then the nodes, then cns, whose warm pool needs no write).
// Before, the failed first programming was never retried: "no route to host" between pods.
func TestRestoredMockarmProgramsFabricOnceNodesAreReachable(t *testing.T) {
	nettest.RequireRoot(t)
	fab := nettest.NewNS(t)
	cfg := DefaultConfig()
	cfg.StatePath = filepath.Join(t.TempDir(), "mockarm.json")
	cfg.Log = slog.New(slog.DiscardHandler)
	node := netip.MustParseAddr("10.240.0.4")

	first, err := New(cfg) // the earlier run: a NIC with three secondaries, saved
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.CreateNIC(cfg.Subscription, cfg.ResourceGroup, "node1-nic", node); err != nil {
		t.Fatal(err)
	}
	id := NICID(cfg.Subscription, cfg.ResourceGroup, "node1-nic")
	first.mu.Lock()
	cur := first.nics[strings.ToLower(id)]
	body := &armnetwork.Interface{Location: cur.Location, Properties: &armnetwork.InterfacePropertiesFormat{
		IPConfigurations: append([]*armnetwork.InterfaceIPConfiguration{}, cur.Properties.IPConfigurations...)}}
	for _, name := range []string{"cns-1", "cns-2", "cns-3"} {
		body.Properties.IPConfigurations = append(body.Properties.IPConfigurations, &armnetwork.InterfaceIPConfiguration{Name: ptr(name),
			Properties: &armnetwork.InterfaceIPConfigurationPropertiesFormat{PrivateIPAllocationMethod: ptr(armnetwork.IPAllocationMethodDynamic)}})
	}
	n, err := first.subnet.apply(id, cur, body, first.SubnetID(), cfg.MaxIPConfigs)
	if err == nil {
		first.nics[strings.ToLower(id)] = n
		first.save()
	}
	first.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := first.NICAddrs(cfg.Subscription, cfg.ResourceGroup, "node1-nic")

	cfg.Fabric = &NetnsFabric{NS: fab}
	restarted, err := New(cfg) // the node is not reachable from the fabric yet
	if err != nil {
		t.Fatal(err)
	}
	if err := fab.Do(func(ns.NetNS) error { // now the node joins the VNet
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "node1"}, PeerName: "node1p"}); err != nil {
			return err
		}
		if p, err := netlinksafe.LinkByName("node1p"); err != nil || netlink.LinkSetUp(p) != nil {
			return fmt.Errorf("peer of node1: %v", err)
		}
		l, err := netlinksafe.LinkByName("node1")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 240, 0, 1), Mask: net.CIDRMask(16, 32)}}); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(restarted) // and its cns reads its NIC
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/subscriptions/" + cfg.Subscription + "/resourceGroups/" + cfg.ResourceGroup +
		"/providers/Microsoft.Network/networkInterfaces/node1-nic?api-version=2025-01-01")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	got := map[netip.Addr]netip.Addr{}
	if err := fab.Do(func(ns.NetNS) error {
		routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
		for _, r := range routes {
			if r.Dst != nil && r.Gw != nil {
				a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
				g, _ := netip.AddrFromSlice(r.Gw.To4())
				got[a] = g
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, a := range want {
		if got[a] != node {
			t.Errorf("fabric route for restored %s: via %v, want via %s (routes %v)", a, got[a], node, got)
		}
	}
}
