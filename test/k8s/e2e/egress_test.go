//go:build e2e

package e2e

import (
	"context"
	"net/netip"
	"testing"
)

// internetHost is an address beyond the VNet router, outside every non-masquerade CIDR.
var internetHost = netip.MustParseAddr("203.0.113.10")

// A pod reaching a host outside the VNet is seen with its node's primary address (cns
// --ip-masq, from the DaemonSet); inside the VNet it keeps its own (Connectivity, Service).
func testEgress(t *testing.T, ctx context.Context, w *world) {
	c := w.c
	inet, err := c.VNet.AddExternalHost("inet", internetHost)
	if err != nil {
		t.Fatal(err)
	}
	addr := echoServer(t, inet, internetHost.String()+":80", "internet")
	for _, n := range c.VNet.Nodes {
		p := podsOn(w.pods, n.Name)[0]
		host, src, err := get(ctx, c, appNS, p.Name, "http://"+addr+"/")
		if err != nil {
			t.Fatalf("pod %s → %s: %v", p.Name, addr, err)
		}
		if host != "internet" || src != n.Primary.String() {
			t.Errorf("pod %s (%s) on %s → internet: seen from %s, want the node's primary %s", p.Name, p.Status.PodIP, n.Name, src, n.Primary)
		}
	}
}
