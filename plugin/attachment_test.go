package plugin

import (
	"testing"

	"github.com/vnet-cni/vnet-cni/proto/cns/v1/contract"
)

// DEL leaves a host veth alone only when its label names another network: its own network's,
// a legacy label (made before networks) and a label it cannot read are all DEL's to remove.
func TestOtherNetworkOnlyForAnotherNetworksLabel(t *testing.T) {
	for _, tc := range []struct {
		alias string
		want  bool
	}{
		{contract.HostVethAlias("blue", "c1", "eth0"), true},
		{contract.HostVethAlias("green", "c1", "eth0"), false},
		{contract.HostVethAliasPrefix + "c1/eth0", false},
		{"", false},
		{"set by someone else", false},
	} {
		if got := otherNetwork(tc.alias, "green"); got != tc.want {
			t.Errorf("otherNetwork(%q, green) = %v, want %v", tc.alias, got, tc.want)
		}
	}
}
