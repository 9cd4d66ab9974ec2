package vnet_test

import (
	"bufio"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vnet-cni/vnet-cni/test/nettest"
	"github.com/vnet-cni/vnet-cni/test/vnet"
)

// A scale-set node and a standalone node start cns with the very same command line and no
// subscription, resource group or NIC: IMDS on 169.254.169.254 (through the node's default
// route to the VNet router) says who each is, azidentity's managed identity credential gets
// a token there, ARM says which NIC, and each pool grows on its own NIC through its shape's
// API (scale-set VM update, NIC PUT).
func TestScaleSetAndStandaloneNodesBootstrapFromIMDSWithTheSameArguments(t *testing.T) {
	nettest.RequireRoot(t)
	v, err := vnet.New(vnet.Options{Prefix: vnet.TestPrefix("imds"), Nodes: 2, ScaleSetNodes: 1, BinDir: binDir, WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := v.Close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	ss, vm := v.Nodes[0], v.Nodes[1]
	if ss.ScaleSet == "" || vm.ScaleSet != "" {
		t.Fatalf("want node1 in a scale set and node2 standalone: %q %q", ss.ScaleSet, vm.ScaleSet)
	}
	if !slices.Equal(ss.Args, vm.Args) {
		t.Fatalf("nodes run different command lines:\n%v\n%v", ss.Args, vm.Args)
	}
	for _, a := range ss.Args {
		if a == "--subscription" || a == "--resource-group" || a == "--nic" || a == "--vmss" || a == "--auth" {
			t.Fatalf("cns got per-node or credential flag %s: %v", a, ss.Args)
		}
	}
	for _, n := range v.Nodes {
		target := logLine(t, n, "cloud target")
		scaleSet := n.ScaleSet
		if scaleSet == "" {
			scaleSet = `""`
		}
		for _, want := range []string{"nic=" + n.NIC + " ", "auth=managed-identity", "scaleSet=" + scaleSet + " "} {
			if !strings.Contains(target, want) {
				t.Errorf("%s: cns found %q, want %s", n.Name, target, want)
			}
		}
	}
	a, b := addPod(t, ss, "a"), addPod(t, vm, "b")
	seen(t, a, b, 8081)
	seen(t, b, a, 8082)
	for _, p := range []*vnet.Pod{a, b} {
		addrs, ok := v.Mock.NICAddrsByID(p.Node.NICID)
		if !ok || !slices.Contains(addrs, p.IP) {
			t.Fatalf("pod %s on %s has %s, not on its NIC %s (%v)", p.Name, p.Node.Name, p.IP, p.Node.NICID, addrs)
		}
	}
}

// ARM in the VNet answers 401 to a call without a token IMDS issued, as ARM does.
func TestVNetARMRejectsCallsWithoutAnIssuedToken(t *testing.T) {
	v := start(t, "auth", 1)
	n := v.Nodes[0]
	url := v.ARMURL + "/subscriptions/" + v.MockCfg.Subscription + "/resourceGroups/" + v.MockCfg.ResourceGroup +
		"/providers/Microsoft.Network/networkInterfaces/" + n.NIC + "?api-version=2025-01-01"
	for _, auth := range []string{"", "Bearer forged", "Bearer mockarm.e30.c2ln"} {
		conn, err := nettest.Dial(n.NS, strings.TrimPrefix(v.ARMURL, "http://"), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		_ = req.Write(conn)
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("GET NIC with Authorization %q from %s: %d, want 401", auth, n.Name, resp.StatusCode)
		}
	}
}

// logLine returns the first line of the node's cns log containing s.
func logLine(t *testing.T, n *vnet.Node, s string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.Dir, "cns.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	t.Fatalf("%s: no %q in the cns log:\n%s", n.Name, s, b)
	return ""
}
