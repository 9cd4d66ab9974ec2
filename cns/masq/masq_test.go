package masq

import (
	"net/netip"
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/google/nftables"
)

func TestExprsKeepNonMasqueradeCIDRsAndLoopback(t *testing.T) {
	rules := Exprs([]netip.Prefix{netip.MustParsePrefix("10.240.0.0/16"), netip.MustParsePrefix("10.1.2.3/32")})
	if len(rules) != 4 {
		t.Fatalf("%d rules, want loopback + 2 CIDRs + masquerade", len(rules))
	}
	if err := Validate([]netip.Prefix{netip.MustParsePrefix("fd00::/8")}); err == nil {
		t.Error("an IPv6 prefix was accepted")
	}
}

// Apply in a namespace of the test's own: twice (idempotent), then Remove.
func TestApplyReplacesTableAtomically(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (a network namespace); CI=true: failing rather than skipping")
		}
		t.Skip("needs root")
	}
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer testutils.UnmountNS(n)
	defer n.Close()
	count := func() int {
		var got int
		if err := n.Do(func(ns.NetNS) error {
			c, err := nftables.New()
			if err != nil {
				return err
			}
			rules, err := c.GetRules(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: Table}, &nftables.Chain{Name: "postrouting"})
			got = len(rules)
			return err
		}); err != nil {
			return -1
		}
		return got
	}
	for _, cidrs := range [][]netip.Prefix{
		{netip.MustParsePrefix("10.240.0.0/16")},
		{netip.MustParsePrefix("10.240.0.0/16"), netip.MustParsePrefix("192.168.0.0/16")},
	} {
		if err := n.Do(func(ns.NetNS) error { return Apply(cidrs) }); err != nil {
			t.Fatal(err)
		}
		if got, want := count(), len(cidrs)+2; got != want {
			t.Fatalf("%d rules after Apply(%v), want %d", got, cidrs, want)
		}
	}
	if err := n.Do(func(ns.NetNS) error { return Remove() }); err != nil {
		t.Fatal(err)
	}
	if got := count(); got > 0 {
		t.Errorf("%d rules after Remove", got)
	}
}
