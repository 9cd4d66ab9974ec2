package azure

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v7"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"

	"github.com/vnet-cni/vnet-cni/cns/cloud"
)

// ScaleSetClient reads and writes the ip configurations of a uniform scale-set VM's NIC.
// Such a NIC cannot be written by a NIC PUT: its ip configurations are part of the instance's
// network profile, changed by updating the instance (a long-running operation, If-Match on
// the instance's etag). Addresses are not in that profile; they are read from the NIC,
// which the network provider serves under the instance. The etag cns decides on is the
// instance's, since that is what a write must match.
type ScaleSetClient struct {
	base     *Client // the NIC's subnet lookups and its view as cns sees it
	vms      *armcompute.VirtualMachineScaleSetVMsClient
	rg, ss   string
	instance string
}

// NewScaleSet builds the clients for instance cfg.Instance of scale set cfg.ScaleSet, whose
// NIC is cfg.NIC.
func NewScaleSet(cfg Config, cred azcore.TokenCredential) (*ScaleSetClient, error) {
	if cfg.ScaleSet == "" || cfg.Instance == "" {
		return nil, errors.New("scale set and instance are required")
	}
	base, err := NewWithCredential(cfg, cred)
	if err != nil {
		return nil, err
	}
	opts, _, err := armOptions(cfg)
	if err != nil {
		return nil, err
	}
	vms, err := armcompute.NewVirtualMachineScaleSetVMsClient(cfg.Subscription, cred, opts)
	if err != nil {
		return nil, fmt.Errorf("scale-set VMs client: %w", err)
	}
	return &ScaleSetClient{base: base, vms: vms, rg: cfg.ResourceGroup, ss: cfg.ScaleSet, instance: cfg.Instance}, nil
}

func (c *ScaleSetClient) name() string { return c.ss + "/" + c.instance }

// vmSnapshot is the instance and its NIC as ARM last answered them, kept in
// cloud.NIC.Snapshot: a write decided on that view changes the instance without reading
// either again.
type vmSnapshot struct {
	vm    armcompute.VirtualMachineScaleSetVM
	iface armnetwork.Interface
}

// GetNIC reads the instance (for its etag) and its NIC (for the addresses).
func (c *ScaleSetClient) GetNIC(ctx context.Context) (cloud.NIC, error) {
	resp, err := c.vms.Get(ctx, c.rg, c.ss, c.instance, nil)
	if err != nil {
		return cloud.NIC{}, classify(fmt.Errorf("get scale-set VM %s: %w", c.name(), err))
	}
	return c.view(ctx, resp.VirtualMachineScaleSetVM)
}

// view is the pool's view of instance vm as ARM answered it: the addresses from its NIC, read
// now, its etag and provisioning state from vm, and both as the snapshot.
func (c *ScaleSetClient) view(ctx context.Context, vm armcompute.VirtualMachineScaleSetVM) (cloud.NIC, error) {
	iface, n, err := c.readNIC(ctx)
	if err != nil {
		return cloud.NIC{}, err
	}
	n.ETag = str(vm.Etag)
	n.Snapshot = vmSnapshot{vm, iface}
	if p := vm.Properties; p != nil && p.ProvisioningState != nil && *p.ProvisioningState != "Succeeded" {
		n.ProvisioningState = *p.ProvisioningState
	}
	return n, nil
}

func (c *ScaleSetClient) readNIC(ctx context.Context) (armnetwork.Interface, cloud.NIC, error) {
	resp, err := c.base.nics.GetVirtualMachineScaleSetNetworkInterface(ctx, c.rg, c.ss, c.instance, c.base.nic, nil)
	if err != nil {
		return armnetwork.Interface{}, cloud.NIC{}, classify(fmt.Errorf("get NIC %s of scale-set VM %s: %w", c.base.nic, c.name(), err))
	}
	n, err := c.base.toNIC(ctx, resp.Interface)
	return resp.Interface, n, err
}

// UpdateIPConfigs applies ch to the instance's network profile with If-Match ch.ETag and
// waits for the update. It builds on ch.Snapshot when that is the version ch was decided on;
// otherwise it reads the instance and its NIC first, and an instance whose etag is no longer
// ch.ETag gives KindConflict without writing. A snapshot gone stale meets ARM's 412, also
// KindConflict.
func (c *ScaleSetClient) UpdateIPConfigs(ctx context.Context, ch cloud.Change) (cloud.NIC, error) {
	vm, iface, err := c.writeBase(ctx, ch)
	if err != nil {
		return cloud.NIC{}, err
	}
	i, err := c.nicConfig(vm)
	if err != nil {
		return cloud.NIC{}, &cloud.Error{Kind: cloud.KindRejected, Err: err}
	}
	conf := vm.Properties.NetworkProfileConfiguration.NetworkInterfaceConfigurations[i]
	primary, err := primaryConfig(iface)
	if err != nil {
		return cloud.NIC{}, &cloud.Error{Kind: cloud.KindRejected, Err: err}
	}
	// The profile names configurations; the NIC says which address each holds. Only cns's
	// own may be removed; every other one is carried through as the profile has it.
	remove := map[string]bool{}
	for _, a := range ch.Remove {
		for _, ipc := range iface.Properties.IPConfigurations {
			if got, ok := configAddr(ipc); ok && got == a && ipc != primary && own(ipc) {
				remove[strings.ToLower(*ipc.Name)] = true
			}
		}
	}
	var kept []*armcompute.VirtualMachineScaleSetIPConfiguration
	for _, ipc := range conf.Properties.IPConfigurations {
		if ipc != nil && ipc.Name != nil && remove[strings.ToLower(*ipc.Name)] {
			continue
		}
		kept = append(kept, ipc)
	}
	for range ch.Add {
		kept = append(kept, &armcompute.VirtualMachineScaleSetIPConfiguration{Name: to.Ptr(cloud.OwnConfigPrefix + randomSuffix()),
			Properties: &armcompute.VirtualMachineScaleSetIPConfigurationProperties{Primary: to.Ptr(false),
				PrivateIPAddressVersion: to.Ptr(armcompute.IPVersionIPv4),
				Subnet:                  &armcompute.APIEntityReference{ID: primary.Properties.Subnet.ID}}})
	}
	vm = withIPConfigs(vm, i, kept)
	var put *http.Response
	poller, err := c.vms.BeginUpdate(policy.WithCaptureResponse(ctx, &put), c.rg, c.ss, c.instance, vm,
		&armcompute.VirtualMachineScaleSetVMsClientBeginUpdateOptions{IfMatch: vm.Etag})
	if err != nil {
		return cloud.NIC{}, classify(fmt.Errorf("update scale-set VM %s: %w", c.name(), err))
	}
	if err := drive(ctx, poller, c.base.poll, put); err != nil {
		return cloud.NIC{}, accepted(classify(fmt.Errorf("poll scale-set VM %s update: %w", c.name(), err)))
	}
	res, err := poller.Result(ctx)
	if err != nil {
		return cloud.NIC{}, classify(fmt.Errorf("scale-set VM %s update: %w", c.name(), err))
	}
	// The instance's answer names configurations, not addresses: read the NIC for those.
	n, err := c.view(ctx, res.VirtualMachineScaleSetVM)
	return n, accepted(err)
}

// writeBase is the instance and NIC a write of ch changes: ch's snapshot if it is of the
// version ch was decided on, else both read now, the instance being that version.
// A snapshot someone else's write has made stale costs a write that ARM refuses (412) rather
// than a read; that happens only with a second writer, while the read was paid by every write.
func (c *ScaleSetClient) writeBase(ctx context.Context, ch cloud.Change) (armcompute.VirtualMachineScaleSetVM, armnetwork.Interface, error) {
	if s, ok := ch.Snapshot.(vmSnapshot); ok && ch.ETag != "" && str(s.vm.Etag) == ch.ETag {
		return s.vm, s.iface, nil
	}
	resp, err := c.vms.Get(ctx, c.rg, c.ss, c.instance, nil)
	if err != nil {
		return armcompute.VirtualMachineScaleSetVM{}, armnetwork.Interface{}, classify(fmt.Errorf("get scale-set VM %s: %w", c.name(), err))
	}
	vm := resp.VirtualMachineScaleSetVM
	if etag := str(vm.Etag); ch.ETag != "" && etag != ch.ETag {
		return armcompute.VirtualMachineScaleSetVM{}, armnetwork.Interface{}, &cloud.Error{Kind: cloud.KindConflict, Err: fmt.Errorf("scale-set VM changed: etag %s, decided on %s", etag, ch.ETag)}
	}
	iface, _, err := c.readNIC(ctx)
	return vm, iface, err
}

// withIPConfigs returns vm with ipcs as the ip configurations of its network profile's
// entry i, sharing nothing it changes with vm (a snapshot its caller still holds).
func withIPConfigs(vm armcompute.VirtualMachineScaleSetVM, i int, ipcs []*armcompute.VirtualMachineScaleSetIPConfiguration) armcompute.VirtualMachineScaleSetVM {
	props := *vm.Properties
	profile := *props.NetworkProfileConfiguration
	profile.NetworkInterfaceConfigurations = slices.Clone(profile.NetworkInterfaceConfigurations)
	nc := *profile.NetworkInterfaceConfigurations[i]
	ncProps := *nc.Properties
	ncProps.IPConfigurations = ipcs
	nc.Properties = &ncProps
	profile.NetworkInterfaceConfigurations[i] = &nc
	props.NetworkProfileConfiguration = &profile
	vm.Properties = &props
	return vm
}

// nicConfig is the index of the instance's network profile entry for cns's NIC.
func (c *ScaleSetClient) nicConfig(vm armcompute.VirtualMachineScaleSetVM) (int, error) {
	if p := vm.Properties; p != nil && p.NetworkProfileConfiguration != nil {
		for i, nc := range p.NetworkProfileConfiguration.NetworkInterfaceConfigurations {
			if nc != nil && nc.Name != nil && strings.EqualFold(*nc.Name, c.base.nic) && nc.Properties != nil {
				return i, nil
			}
		}
	}
	return 0, fmt.Errorf("scale-set VM %s has no network profile configuration for NIC %s", c.name(), c.base.nic)
}

// primaryNICConfigName is the scale-set VM's primary network interface configuration.
func primaryNICConfigName(vm armcompute.VirtualMachineScaleSetVM) string {
	if p := vm.Properties; p != nil && p.NetworkProfileConfiguration != nil {
		confs := p.NetworkProfileConfiguration.NetworkInterfaceConfigurations
		for _, nc := range confs {
			if nc != nil && nc.Name != nil && nc.Properties != nil && nc.Properties.Primary != nil && *nc.Properties.Primary {
				return *nc.Name
			}
		}
		if len(confs) == 1 && confs[0] != nil && confs[0].Name != nil {
			return *confs[0].Name
		}
	}
	return ""
}
