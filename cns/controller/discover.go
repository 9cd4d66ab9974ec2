package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/vnet-cni/vnet-cni/cns/api/v1alpha1"
	"github.com/vnet-cni/vnet-cni/cns/cloud"
	"github.com/vnet-cni/vnet-cni/cns/cloud/azure"
)

// Discoverer finds a node's NIC the way cns finds its own, with the Node's spec.providerID
// standing in for IMDS: a standalone VM's primary NIC (written by NIC PUT) or a uniform
// scale-set instance's NIC (written through the instance), with the same cns/cloud/azure
// backends. NICNameFormat, when set, skips discovery: the NIC is Sprintf(format, node) in
// Base's subscription and resource group (NICs that no VM owns, as in a bare mockarm).
//
// The provider ID is the kubelet's to write, so it is not trusted alone: the VM it names
// must carry the node's name as its computer name, and, when AllowedGroups is set, live in
// one of those "subscription/resourceGroup" pairs.
type Discoverer struct {
	Nodes         client.Reader // Node objects; a live reader, nodes are read once each
	Base          azure.Config  // endpoint, auth and transport shared by every node
	Cred          azcore.TokenCredential
	NICNameFormat string
	AllowedGroups []string // "subscription/resourceGroup", case-insensitive; empty allows any
}

// NIC returns the cloud client of node's NIC. An error that time may mend (the Node cannot
// be read, or has no provider ID yet) is a transient *cloud.Error; a foreign or refused
// provider ID, or a VM that is not the node's, is a rejected one.
func (d *Discoverer) NIC(ctx context.Context, node string) (NIC, error) {
	if d.NICNameFormat != "" {
		ac := d.Base
		ac.NIC = fmt.Sprintf(d.NICNameFormat, node)
		return azure.NewWithCredential(ac, d.Cred)
	}
	n := &corev1.Node{}
	if err := d.Nodes.Get(ctx, client.ObjectKey{Name: node}, n); err != nil {
		return nil, &cloud.Error{Kind: cloud.KindUnavailable, Code: v1.ReasonPending, Err: fmt.Errorf("read Node %s: %w", node, err)}
	}
	if n.Spec.ProviderID == "" {
		return nil, &cloud.Error{Kind: cloud.KindUnavailable, Code: v1.ReasonProviderIDNotSet,
			Err: fmt.Errorf("node %s has no spec.providerID yet", node)}
	}
	ac, vm, err := azure.FromProviderID(d.Base, n.Spec.ProviderID)
	if err != nil {
		return nil, rejected(v1.ReasonNICNotFound, fmt.Errorf("node %s: %w", node, err))
	}
	if !d.allowed(ac) {
		return nil, rejected(v1.ReasonNICNotFound, fmt.Errorf("node %s: provider ID %q is outside the allowed resource groups %v",
			node, n.Spec.ProviderID, d.AllowedGroups))
	}
	if ac, err = azure.DiscoverNodeNIC(ctx, ac, d.Cred, vm, node); err != nil {
		if errors.Is(err, azure.ErrNotTheNode) {
			return nil, rejected(v1.ReasonNICClaimed, fmt.Errorf("node %s: %w", node, err))
		}
		return nil, fmt.Errorf("node %s: %w", node, err)
	}
	if ac.ScaleSet != "" {
		return azure.NewScaleSet(ac, d.Cred)
	}
	return azure.NewWithCredential(ac, d.Cred)
}

func (d *Discoverer) allowed(ac azure.Config) bool {
	if len(d.AllowedGroups) == 0 {
		return true
	}
	for _, g := range d.AllowedGroups {
		if strings.EqualFold(g, ac.Subscription+"/"+ac.ResourceGroup) {
			return true
		}
	}
	return false
}

func rejected(reason string, err error) error {
	return &cloud.Error{Kind: cloud.KindRejected, Code: reason, Err: err}
}
