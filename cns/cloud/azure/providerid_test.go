package azure

import "testing"

func TestFromProviderIDPlacesStandaloneAndScaleSetVMs(t *testing.T) {
	base := Config{Subscription: "flag-sub", ResourceGroup: "flag-rg", NIC: "flag-nic", ScaleSet: "x", Instance: "9"}
	for _, tc := range []struct {
		name, id                    string
		sub, rg, vm, scaleSet, inst string
		wantErr                     bool
	}{
		{name: "standalone VM", id: "azure:///subscriptions/s1/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm-7",
			sub: "s1", rg: "rg1", vm: "vm-7"},
		{name: "scale-set VM, AKS's lower-case group", id: "azure:///subscriptions/s1/resourceGroups/mc_rg_aks_westeurope/providers/Microsoft.Compute/virtualMachineScaleSets/aks-nodepool1-123-vmss/virtualMachines/4",
			sub: "s1", rg: "mc_rg_aks_westeurope", scaleSet: "aks-nodepool1-123-vmss", inst: "4"},
		{name: "not Azure", id: "aws:///eu-west-1a/i-0123", wantErr: true},
		{name: "empty (no cloud provider yet)", id: "", wantErr: true},
		{name: "a NIC, not a VM", id: "azure:///subscriptions/s1/resourceGroups/rg1/providers/Microsoft.Network/networkInterfaces/n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, vm, err := FromProviderID(base, tc.id)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("FromProviderID(%q) = %+v, want an error", tc.id, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Subscription != tc.sub || got.ResourceGroup != tc.rg || vm != tc.vm || got.ScaleSet != tc.scaleSet ||
				got.Instance != tc.inst || got.NIC != "" {
				t.Fatalf("FromProviderID(%q) = sub %q rg %q vm %q scale set %q/%q nic %q; want %q %q %q %q/%q and no NIC",
					tc.id, got.Subscription, got.ResourceGroup, vm, got.ScaleSet, got.Instance, got.NIC, tc.sub, tc.rg, tc.vm, tc.scaleSet, tc.inst)
			}
		})
	}
}
