package azure

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v7"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"

	"github.com/vnet-cni/vnet-cni/cns/imds"
)

// NeedsIMDS reports whether cfg leaves anything for the instance metadata to say: flags
// place the node either as (subscription, resource group, NIC) or as (subscription, resource
// group, scale set, instance), the scale-set NIC then being found through ARM.
func (cfg Config) NeedsIMDS() bool {
	return cfg.Subscription == "" || cfg.ResourceGroup == "" || (cfg.NIC == "" && (cfg.ScaleSet == "" || cfg.Instance == ""))
}

// FromInstance fills what flags left empty from the instance metadata. Flags win, each on
// its own: a flag-given resource group stays even when IMDS names another.
func (cfg Config) FromInstance(inst imds.Instance) Config {
	if cfg.Subscription == "" {
		cfg.Subscription = inst.SubscriptionID
	}
	if cfg.ResourceGroup == "" {
		cfg.ResourceGroup = inst.ResourceGroup
	}
	if cfg.ScaleSet == "" && cfg.Instance == "" && cfg.NIC == "" {
		cfg.ScaleSet, cfg.Instance = inst.ScaleSet, inst.InstanceID
	}
	return cfg
}

// DiscoverNIC finds the node's NIC through ARM when cfg does not name it: for a scale-set
// VM, the instance's primary network interface configuration; for a standalone VM, the NIC
// of the VM's network profile whose MAC is the one IMDS reported (mac). A NIC that the
// profile names but whose MAC differs is not taken: cns must never manage another VM's NIC.
// Without a MAC (the cluster controller places nodes by provider ID), the VM's primary NIC.
func DiscoverNIC(ctx context.Context, cfg Config, cred azcore.TokenCredential, vmName string, mac net.HardwareAddr) (Config, error) {
	return discoverNIC(ctx, cfg, cred, vmName, mac, "")
}

// DiscoverNodeNIC is DiscoverNIC for the cluster controller, which places a node by its
// Node's provider ID, a field the node's kubelet may write: the VM (standalone or scale-set
// instance) must also carry node as its osProfile.computerName (case aside), or no NIC is
// returned, so a node cannot name another VM's NIC as its own.
func DiscoverNodeNIC(ctx context.Context, cfg Config, cred azcore.TokenCredential, vmName, node string) (Config, error) {
	if node == "" {
		return cfg, errors.New("no node name to check the VM's computer name against")
	}
	return discoverNIC(ctx, cfg, cred, vmName, nil, node)
}

// ErrNotTheNode is wrapped by DiscoverNodeNIC's error when the VM's computer name is not
// the node's.
var ErrNotTheNode = errors.New("the VM's computer name is not the node's name")

func checkOwner(os *armcompute.OSProfile, what, node string) error {
	if node == "" {
		return nil
	}
	var got string
	if os != nil {
		got = str(os.ComputerName)
	}
	if !strings.EqualFold(got, node) {
		return fmt.Errorf("%s has computer name %q, not node %s: %w", what, got, node, ErrNotTheNode)
	}
	return nil
}

func discoverNIC(ctx context.Context, cfg Config, cred azcore.TokenCredential, vmName string, mac net.HardwareAddr, node string) (Config, error) {
	if cfg.NIC != "" && node == "" {
		return cfg, nil
	}
	opts, _, err := armOptions(cfg)
	if err != nil {
		return cfg, err
	}
	nics, err := armnetwork.NewInterfacesClient(cfg.Subscription, cred, opts)
	if err != nil {
		return cfg, err
	}
	if cfg.ScaleSet != "" {
		vms, err := armcompute.NewVirtualMachineScaleSetVMsClient(cfg.Subscription, cred, opts)
		if err != nil {
			return cfg, err
		}
		vm, err := vms.Get(ctx, cfg.ResourceGroup, cfg.ScaleSet, cfg.Instance, nil)
		if err != nil {
			return cfg, fmt.Errorf("read scale-set VM %s/%s: %w", cfg.ScaleSet, cfg.Instance, classify(err))
		}
		var os *armcompute.OSProfile
		if vm.Properties != nil {
			os = vm.Properties.OSProfile
		}
		if err := checkOwner(os, "scale-set VM "+cfg.ScaleSet+"/"+cfg.Instance, node); err != nil {
			return cfg, err
		}
		name := primaryNICConfigName(vm.VirtualMachineScaleSetVM)
		if name == "" {
			return cfg, fmt.Errorf("scale-set VM %s/%s has no primary network interface configuration", cfg.ScaleSet, cfg.Instance)
		}
		nic, err := nics.GetVirtualMachineScaleSetNetworkInterface(ctx, cfg.ResourceGroup, cfg.ScaleSet, cfg.Instance, name, nil)
		if err != nil {
			return cfg, fmt.Errorf("read NIC %s of scale-set VM %s/%s: %w", name, cfg.ScaleSet, cfg.Instance, classify(err))
		}
		if err := sameMAC(nic.Interface, mac); err != nil {
			return cfg, err
		}
		cfg.NIC = name
		return cfg, nil
	}
	if vmName == "" {
		return cfg, errors.New("no NIC: give --nic, or run on an Azure VM whose IMDS names it")
	}
	vms, err := armcompute.NewVirtualMachinesClient(cfg.Subscription, cred, opts)
	if err != nil {
		return cfg, err
	}
	vm, err := vms.Get(ctx, cfg.ResourceGroup, vmName, nil)
	if err != nil {
		return cfg, fmt.Errorf("read VM %s: %w", vmName, classify(err))
	}
	var os *armcompute.OSProfile
	if vm.Properties != nil {
		os = vm.Properties.OSProfile
	}
	if err := checkOwner(os, "VM "+vmName, node); err != nil {
		return cfg, err
	}
	var refs []*armcompute.NetworkInterfaceReference
	if p := vm.Properties; p != nil && p.NetworkProfile != nil {
		refs = slices.Clone(p.NetworkProfile.NetworkInterfaces)
	}
	if mac == nil { // no MAC to match (the cluster controller): the VM's primary NIC
		slices.SortStableFunc(refs, func(a, b *armcompute.NetworkInterfaceReference) int {
			return boolRank(isPrimary(b)) - boolRank(isPrimary(a))
		})
	}
	var seen []string
	for _, ref := range refs {
		if ref == nil || ref.ID == nil {
			continue
		}
		rid, err := arm.ParseResourceID(*ref.ID)
		if err != nil {
			continue
		}
		nic, err := nics.Get(ctx, rid.ResourceGroupName, rid.Name, nil)
		if err != nil {
			return cfg, fmt.Errorf("read NIC %s of VM %s: %w", rid.Name, vmName, classify(err))
		}
		if err := sameMAC(nic.Interface, mac); err != nil {
			seen = append(seen, err.Error())
			continue
		}
		// The NIC may live in another resource group than the VM.
		cfg.NIC, cfg.ResourceGroup = rid.Name, rid.ResourceGroupName
		return cfg, nil
	}
	return cfg, fmt.Errorf("no NIC of VM %s has the MAC %s that IMDS reported (%d in its network profile: %s)",
		vmName, mac, len(refs), strings.Join(seen, "; "))
}

func isPrimary(r *armcompute.NetworkInterfaceReference) bool {
	return r != nil && r.Properties != nil && r.Properties.Primary != nil && *r.Properties.Primary
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// sameMAC checks the NIC's MAC against IMDS's; no MAC from IMDS (flags only) accepts any.
func sameMAC(nic armnetwork.Interface, mac net.HardwareAddr) error {
	if mac == nil {
		return nil
	}
	var got string
	if nic.Properties != nil {
		got = str(nic.Properties.MacAddress)
	}
	m, err := imds.ParseMAC(got)
	if err != nil || !bytes.Equal(m, mac) {
		return fmt.Errorf("NIC %s has MAC %q, not %s", str(nic.Name), got, mac)
	}
	return nil
}
