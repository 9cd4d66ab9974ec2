package controller

import (
	"context"
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vnet-cni/vnet-cni/cns/cloud/azure"
)

// Discoverer finds a node's NIC the way cns finds its own, with the Node's spec.providerID
// standing in for IMDS: a standalone VM's primary NIC (written by NIC PUT) or a uniform
// scale-set instance's NIC (written through the instance), with the same cns/cloud/azure
// backends. NICNameFormat, when set, skips discovery: the NIC is Sprintf(format, node) in
// Base's subscription and resource group (NICs that no VM owns, as in a bare mockarm).
type Discoverer struct {
	Nodes         client.Reader // Node objects; a live reader, nodes are read once each
	Base          azure.Config  // endpoint, auth and transport shared by every node
	Cred          azcore.TokenCredential
	NICNameFormat string
}

// NIC returns the cloud client of node's NIC.
func (d *Discoverer) NIC(ctx context.Context, node string) (NIC, error) {
	if d.NICNameFormat != "" {
		ac := d.Base
		ac.NIC = fmt.Sprintf(d.NICNameFormat, node)
		return azure.NewWithCredential(ac, d.Cred)
	}
	n := &corev1.Node{}
	if err := d.Nodes.Get(ctx, client.ObjectKey{Name: node}, n); err != nil {
		return nil, fmt.Errorf("read Node %s: %w", node, err)
	}
	ac, vm, err := azure.FromProviderID(d.Base, n.Spec.ProviderID)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", node, err)
	}
	if ac, err = azure.DiscoverNIC(ctx, ac, d.Cred, vm, nil); err != nil {
		return nil, fmt.Errorf("node %s: %w", node, err)
	}
	if ac.ScaleSet != "" {
		return azure.NewScaleSet(ac, d.Cred)
	}
	return azure.NewWithCredential(ac, d.Cred)
}
