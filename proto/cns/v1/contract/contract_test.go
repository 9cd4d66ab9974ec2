package contract

import (
	"strings"
	"testing"
)

func TestHostVethAliasReadsBothLabelFormats(t *testing.T) {
	for _, tc := range []struct {
		alias                string
		network, cid, ifname string
		legacy, ok           bool
	}{
		{HostVethAlias("vnet-b", "abc", "eth0"), "vnet-b", "abc", "eth0", false, true},
		{"vnet-cni:abc/eth0", "", "abc", "eth0", true, true},
		{"vnet-cni:old/id/eth0", "", "old/id", "eth0", true, true}, // pre-validation IDs with '/'
		{"vnet-cni.v2:net/abc", "", "", "", false, false},
		{"vnet-cni.v2:net/a/b/eth0", "", "", "", false, false},
		{"vnet-cni:abc", "", "", "", false, false},
		{"something else", "", "", "", false, false},
	} {
		n, c, i, legacy, ok := ParseHostVethAlias(tc.alias)
		if n != tc.network || c != tc.cid || i != tc.ifname || legacy != tc.legacy || ok != tc.ok {
			t.Errorf("ParseHostVethAlias(%q) = %q %q %q legacy=%v ok=%v, want %q %q %q legacy=%v ok=%v",
				tc.alias, n, c, i, legacy, ok, tc.network, tc.cid, tc.ifname, tc.legacy, tc.ok)
		}
	}
	longest := HostVethAlias(strings.Repeat("n", MaxNetworkName), strings.Repeat("c", MaxContainerID), strings.Repeat("i", MaxIfName))
	if len(longest) >= 256 || !AliasFits(strings.Repeat("n", MaxNetworkName), strings.Repeat("c", MaxContainerID), strings.Repeat("i", MaxIfName)) {
		t.Fatalf("the longest allowed label is %d bytes; the kernel takes at most 255", len(longest))
	}
}
