package azure_test

import (
	"errors"
	"testing"

	"github.com/vnet-cni/vnet-cni/cns/cloud/azure"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
)

// A node placed by its provider ID gets its VM's NIC only when the VM's computer name is the
// node's: a kubelet that names another VM in its providerID gets nothing.
func TestDiscoverNodeNICChecksTheVMsComputerName(t *testing.T) {
	m, vm, ss := identity(t)
	mc := mockarm.DefaultConfig()
	m.SetComputerName(mockarm.ScaleSetVMID(mc.Subscription, mc.ResourceGroup, "pool", "0"), "ss-node")
	for _, tc := range []struct {
		name, id, node string
		cfg            azure.Config
		ok             bool
	}{
		{"standalone, same name other case", mockarm.VMID(mc.Subscription, mc.ResourceGroup, "vm0"), "VM0", vm, true},
		{"standalone, other node", mockarm.VMID(mc.Subscription, mc.ResourceGroup, "vm0"), "vm1", vm, false},
		{"scale-set, same name", mockarm.ScaleSetVMID(mc.Subscription, mc.ResourceGroup, "pool", "0"), "ss-node", ss, true},
		{"scale-set, other node", mockarm.ScaleSetVMID(mc.Subscription, mc.ResourceGroup, "pool", "0"), "vm0", ss, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inst := instance(t, tc.cfg)
			cred, err := azure.Credential(tc.cfg.FromInstance(inst))
			if err != nil {
				t.Fatal(err)
			}
			cfg, vmName, err := azure.FromProviderID(tc.cfg, "azure://"+tc.id)
			if err != nil {
				t.Fatal(err)
			}
			got, err := azure.DiscoverNodeNIC(ctx(t), cfg, cred, vmName, tc.node)
			if tc.ok && (err != nil || got.NIC == "") {
				t.Fatalf("DiscoverNodeNIC(%s) = %+v, %v; want its NIC", tc.node, got, err)
			}
			if !tc.ok && !errors.Is(err, azure.ErrNotTheNode) {
				t.Fatalf("DiscoverNodeNIC(%s) = %+v, %v; want ErrNotTheNode", tc.node, got, err)
			}
		})
	}
}
