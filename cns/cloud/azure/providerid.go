package azure

import (
	"fmt"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
)

// FromProviderID places a Kubernetes node's VM from its spec.providerID, as Azure's cloud
// provider writes it: azure:///subscriptions/S/resourceGroups/G/providers/Microsoft.Compute/
// virtualMachines/NAME for a standalone VM (NAME is returned, DiscoverNIC finds its NIC), or
// …/virtualMachineScaleSets/SS/virtualMachines/ID for a uniform scale-set instance. The ID is
// the node's own truth: it replaces cfg's subscription, resource group, scale set and NIC.
func FromProviderID(cfg Config, providerID string) (Config, string, error) {
	id, ok := strings.CutPrefix(providerID, "azure://")
	if !ok {
		return cfg, "", fmt.Errorf("provider ID %q is not an Azure one (azure:///subscriptions/…)", providerID)
	}
	rid, err := arm.ParseResourceID(id)
	if err != nil {
		return cfg, "", fmt.Errorf("provider ID %q: %w", providerID, err)
	}
	cfg.Subscription, cfg.ResourceGroup, cfg.NIC = rid.SubscriptionID, rid.ResourceGroupName, ""
	cfg.ScaleSet, cfg.Instance = "", ""
	switch t := strings.ToLower(rid.ResourceType.String()); {
	case t == "microsoft.compute/virtualmachines":
		return cfg, rid.Name, nil
	case t == "microsoft.compute/virtualmachinescalesets/virtualmachines" && rid.Parent != nil:
		cfg.ScaleSet, cfg.Instance = rid.Parent.Name, rid.Name
		return cfg, "", nil
	default:
		return cfg, "", fmt.Errorf("provider ID %q names a %s, not a VM or a scale-set VM", providerID, rid.ResourceType)
	}
}
