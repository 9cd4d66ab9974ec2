package masq

import (
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/google/nftables"
)

func TestExprsKeepNonMasqueradeCIDRsAndLoopback(t *testing.T) {
	rules := Exprs([]netip.Prefix{netip.MustParsePrefix("10.240.0.0/16"), netip.MustParsePrefix("10.1.2.3/32")})
	if len(rules) != 5 {
		t.Fatalf("%d rules, want loopback + link-local + 2 CIDRs + masquerade", len(rules))
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
		if got, want := count(), len(cidrs)+3; got != want {
			t.Fatalf("%d rules after Apply(%v), want %d", got, cidrs, want)
		}
	}
	remove := func() bool {
		var removed bool
		if err := n.Do(func(ns.NetNS) (err error) { removed, err = Remove(); return err }); err != nil {
			t.Fatal(err)
		}
		return removed
	}
	if !remove() {
		t.Error("Remove did not find the table Apply made")
	}
	if got := count(); got > 0 {
		t.Errorf("%d rules after Remove", got)
	}
	if remove() {
		t.Error("a second Remove found a table")
	}
}

func TestDefaultNonMasqKeepsPrivateSpaceAndAPublicSubnet(t *testing.T) {
	rfc1918 := []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}
	for _, tc := range []struct {
		name, subnet string
		want         []string
	}{
		{"subnet in private space", "10.240.0.0/16", rfc1918},
		{"subnet not known yet", "", rfc1918},
		{"VNet in public space", "20.1.0.0/24", append(slices.Clone(rfc1918), "20.1.0.0/24")},
		{"subnet wider than a private range", "10.0.0.0/7", append(slices.Clone(rfc1918), "10.0.0.0/7")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var subnet netip.Prefix
			if tc.subnet != "" {
				subnet = netip.MustParsePrefix(tc.subnet)
			}
			var got []string
			for _, p := range DefaultNonMasq(subnet) {
				got = append(got, p.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("DefaultNonMasq(%s) = %v, want %v", tc.subnet, got, tc.want)
			}
		})
	}
}
