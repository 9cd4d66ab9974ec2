package cns

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/vnet-cni/vnet-cni/cns/cloud/azure"
	"github.com/vnet-cni/vnet-cni/cns/imds"
)

var (
	_ NICAPI = (*azure.Client)(nil)
	_ NICAPI = (*azure.ScaleSetClient)(nil)
)

// connectCloud finds the node's NIC and builds its backend, before cns opens its state or
// its sockets: a node that cannot say who it is fails here, whole, with the missing piece
// named, and is never half configured. What flags give is taken as given; the rest comes
// from the instance metadata (IMDS) and from ARM. A scale-set VM gets the scale-set VM
// backend, a standalone VM the NIC backend.
func connectCloud(ctx context.Context, cfg Config, log *slog.Logger) (NICAPI, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.BootstrapTimeout)
	defer cancel()
	ac := cfg.Azure
	var inst imds.Instance
	if ac.NeedsIMDS() {
		var err error
		c := &imds.Client{Endpoint: cfg.IMDSEndpoint}
		if inst, err = c.Instance(ctx); err != nil {
			return nil, fmt.Errorf("who is this node: %w (off Azure, give --subscription, --resource-group and --nic)", err)
		}
		ac = ac.FromInstance(inst)
		log.Info("instance metadata", "subscription", inst.SubscriptionID, "resourceGroup", inst.ResourceGroup, "vm", inst.Name,
			"scaleSet", inst.ScaleSet, "instance", inst.InstanceID, "mac", inst.MAC.String())
	}
	cred, err := azure.Credential(ac)
	if err != nil {
		return nil, err
	}
	if err := azure.CheckToken(ctx, ac, cred); err != nil {
		return nil, err
	}
	if ac, err = azure.DiscoverNIC(ctx, ac, cred, inst.Name, inst.MAC); err != nil {
		return nil, fmt.Errorf("find the node NIC: %w", err)
	}
	log.Info("cloud target", "subscription", ac.Subscription, "resourceGroup", ac.ResourceGroup, "nic", ac.NIC,
		"scaleSet", ac.ScaleSet, "instance", ac.Instance, "auth", ac.Auth)
	if ac.ScaleSet != "" {
		return azure.NewScaleSet(ac, cred)
	}
	return azure.NewWithCredential(ac, cred)
}
