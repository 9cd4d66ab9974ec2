package mockarm

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v7"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"
)

// The compute side of mockarm: standalone VMs (whose NIC is a Microsoft.Network resource
// written by PUT) and uniform scale-set VMs (whose NIC is a child of the instance, read through
// the network provider and written only by updating the instance's network profile). Both
// shapes keep their NIC in s.nics, so the allocator, write bucket, operations, faults and
// fabric are the same for both. A scale-set VM's etag is its NIC's: in this model the
// instance changes exactly when its ip configurations do.

// VMID is the ARM ID of a standalone VM.
func VMID(sub, rg, name string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachines/%s", sub, rg, name)
}

// ScaleSetVMID is the ARM ID of a scale-set VM.
func ScaleSetVMID(sub, rg, scaleSet, instance string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachineScaleSets/%s/virtualMachines/%s",
		sub, rg, scaleSet, instance)
}

// ScaleSetNICID is the ARM ID of a scale-set VM's NIC.
func ScaleSetNICID(sub, rg, scaleSet, instance, nic string) string {
	return ScaleSetVMID(sub, rg, scaleSet, instance) + "/networkInterfaces/" + nic
}

func (s *Server) computeRoutes() {
	ssvm := "/subscriptions/{sub}/resourceGroups/{rg}/providers/{provider}/virtualMachineScaleSets/{ss}/virtualMachines/{instance}"
	s.mux.HandleFunc("GET /subscriptions/{sub}/resourceGroups/{rg}/providers/{provider}/virtualMachines/{vm}", s.arm(s.getVM))
	s.mux.HandleFunc("GET "+ssvm, s.arm(s.getScaleSetVM))
	s.mux.HandleFunc("PUT "+ssvm, s.arm(s.putScaleSetVM))
	s.mux.HandleFunc("GET "+ssvm+"/networkInterfaces/{nic}", s.arm(s.getScaleSetNIC))
}

// CreateVM makes a standalone VM with one NIC, <name>-nic, at primary (or the next free
// address when primary is invalid). An existing VM is left as it is.
func (s *Server) CreateVM(sub, rg, name string, primary netip.Addr) (netip.Addr, error) {
	return s.createWithVM(NICID(sub, rg, name+"-nic"), primary, VMID(sub, rg, name))
}

// CreateScaleSetVM makes instance of a uniform scale set, with one NIC named nic.
func (s *Server) CreateScaleSetVM(sub, rg, scaleSet, instance, nic string, primary netip.Addr) (netip.Addr, error) {
	return s.createWithVM(ScaleSetNICID(sub, rg, scaleSet, instance, nic), primary, ScaleSetVMID(sub, rg, scaleSet, instance))
}

// SetComputerName sets the osProfile.computerName the VM vmID (VMID or ScaleSetVMID) reports.
// By default a standalone VM's is its name and a scale-set instance's is the scale set's name
// followed by the instance ID in base 36 on six digits, as Azure names them.
func (s *Server) SetComputerName(vmID, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names == nil {
		s.names = map[string]string{}
	}
	s.names[strings.ToLower(vmID)] = name
}

// computerNameLocked is the computer name of the VM vmID, whose own name (or, for a
// scale-set instance, scale set and instance ID) is given.
func (s *Server) computerNameLocked(vmID, vm, scaleSet, instance string) string {
	if n, ok := s.names[strings.ToLower(vmID)]; ok {
		return n
	}
	if scaleSet == "" {
		return vm
	}
	if i, err := strconv.ParseUint(instance, 10, 64); err == nil {
		return fmt.Sprintf("%s%06s", scaleSet, strconv.FormatUint(i, 36))
	}
	return scaleSet + instance
}

func (s *Server) createWithVM(nicID string, primary netip.Addr, vm string) (netip.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n, ok := s.nics[strings.ToLower(nicID)]; ok {
		return primaryAddr(n), nil
	}
	n, err := s.createNICLocked(nicID, primary, vm)
	if err != nil {
		return netip.Addr{}, err
	}
	return primaryAddr(n), nil
}

func checkCompute(r *http.Request) error {
	if !strings.EqualFold(r.PathValue("provider"), "Microsoft.Compute") {
		return apiErr(404, "InvalidResourceNamespace", "resource provider "+r.PathValue("provider")+" not served")
	}
	return nil
}

func (s *Server) getVM(r *http.Request) (int, any, http.Header, error) {
	if err := checkCompute(r); err != nil {
		return 0, nil, nil, err
	}
	id := VMID(r.PathValue("sub"), r.PathValue("rg"), r.PathValue("vm"))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Gets++
	var nics []*armcompute.NetworkInterfaceReference
	for _, n := range s.nics {
		if vm := n.Properties.VirtualMachine; vm != nil && vm.ID != nil && strings.EqualFold(*vm.ID, id) {
			nics = append(nics, &armcompute.NetworkInterfaceReference{ID: n.ID,
				Properties: &armcompute.NetworkInterfaceReferenceProperties{Primary: ptr(len(nics) == 0)}})
		}
	}
	if len(nics) == 0 {
		return 0, nil, nil, apiErr(404, "ResourceNotFound", "virtual machine "+id+" not found")
	}
	return 200, armcompute.VirtualMachine{ID: ptr(id), Name: ptr(r.PathValue("vm")), Location: ptr(s.cfg.Location),
		Type: ptr("Microsoft.Compute/virtualMachines"), Properties: &armcompute.VirtualMachineProperties{
			ProvisioningState: ptr("Succeeded"),
			OSProfile:         &armcompute.OSProfile{ComputerName: ptr(s.computerNameLocked(id, r.PathValue("vm"), "", ""))},
			NetworkProfile:    &armcompute.NetworkProfile{NetworkInterfaces: nics}}}, nil, nil
}

// scaleSetNICLocked finds the NIC of a scale-set VM.
func (s *Server) scaleSetNICLocked(vmID string) (string, *armnetwork.Interface, error) {
	prefix := strings.ToLower(vmID) + "/networkinterfaces/"
	for key, n := range s.nics {
		if strings.HasPrefix(key, prefix) {
			return key, n, nil
		}
	}
	return "", nil, apiErr(404, "ResourceNotFound", "virtual machine scale set VM "+vmID+" not found")
}

func (s *Server) getScaleSetVM(r *http.Request) (int, any, http.Header, error) {
	if err := checkCompute(r); err != nil {
		return 0, nil, nil, err
	}
	id := ScaleSetVMID(r.PathValue("sub"), r.PathValue("rg"), r.PathValue("ss"), r.PathValue("instance"))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Gets++
	_, n, err := s.scaleSetNICLocked(id)
	if err != nil {
		return 0, nil, nil, err
	}
	return 200, s.scaleSetView(id, r.PathValue("instance"), n), http.Header{"Etag": {*n.Etag}}, nil
}

// scaleSetView is a scale-set VM as ARM shows it: the network profile configuration names
// each ip configuration and its subnet but not its address (that is on the NIC).
func (s *Server) scaleSetView(id, instance string, n *armnetwork.Interface) armcompute.VirtualMachineScaleSetVM {
	var ipcs []*armcompute.VirtualMachineScaleSetIPConfiguration
	for _, c := range n.Properties.IPConfigurations {
		ipcs = append(ipcs, &armcompute.VirtualMachineScaleSetIPConfiguration{Name: c.Name,
			Properties: &armcompute.VirtualMachineScaleSetIPConfigurationProperties{Primary: c.Properties.Primary,
				PrivateIPAddressVersion: ptr(armcompute.IPVersionIPv4),
				Subnet:                  &armcompute.APIEntityReference{ID: c.Properties.Subnet.ID}}})
	}
	state := "Succeeded"
	if p := n.Properties.ProvisioningState; p != nil {
		state = string(*p)
	}
	scaleSet := id[strings.Index(id, "virtualMachineScaleSets/")+24 : strings.Index(id, "/virtualMachines/")]
	return armcompute.VirtualMachineScaleSetVM{ID: ptr(id), Name: ptr(scaleSet + "_" + instance),
		InstanceID: ptr(instance), Location: ptr(s.cfg.Location), Etag: n.Etag, Type: ptr("Microsoft.Compute/virtualMachineScaleSets/virtualMachines"),
		Properties: &armcompute.VirtualMachineScaleSetVMProperties{ProvisioningState: ptr(state),
			OSProfile: &armcompute.OSProfile{ComputerName: ptr(s.computerNameLocked(id, "", scaleSet, instance))},
			NetworkProfile: &armcompute.NetworkProfile{NetworkInterfaces: []*armcompute.NetworkInterfaceReference{{ID: n.ID,
				Properties: &armcompute.NetworkInterfaceReferenceProperties{Primary: ptr(true)}}}},
			NetworkProfileConfiguration: &armcompute.VirtualMachineScaleSetVMNetworkProfileConfiguration{
				NetworkInterfaceConfigurations: []*armcompute.VirtualMachineScaleSetNetworkConfiguration{{Name: n.Name,
					Properties: &armcompute.VirtualMachineScaleSetNetworkConfigurationProperties{Primary: ptr(true), IPConfigurations: ipcs}}}}}}
}

// putScaleSetVM updates a scale-set VM: its network profile's ip configurations become its
// NIC's, through the same write path as a NIC PUT.
func (s *Server) putScaleSetVM(r *http.Request) (int, any, http.Header, error) {
	if err := checkCompute(r); err != nil {
		return 0, nil, nil, err
	}
	sub, instance := r.PathValue("sub"), r.PathValue("instance")
	id := ScaleSetVMID(sub, r.PathValue("rg"), r.PathValue("ss"), instance)
	var body armcompute.VirtualMachineScaleSetVM
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 4<<20)).Decode(&body); err != nil {
		return 0, nil, nil, &apiError{400, "InvalidRequestContent", err.Error(), 0}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, cur, err := s.scaleSetNICLocked(id)
	if err != nil {
		return 0, nil, nil, err
	}
	var conf *armcompute.VirtualMachineScaleSetNetworkConfiguration
	if p := body.Properties; p != nil && p.NetworkProfileConfiguration != nil {
		for _, c := range p.NetworkProfileConfiguration.NetworkInterfaceConfigurations {
			if c != nil && c.Name != nil && strings.EqualFold(*c.Name, *cur.Name) && c.Properties != nil {
				conf = c
			}
		}
	}
	if conf == nil {
		return 0, nil, nil, apiErr(400, "InvalidParameter", "networkProfileConfiguration has no configuration for NIC "+*cur.Name)
	}
	nic := &armnetwork.Interface{Location: cur.Location, Properties: &armnetwork.InterfacePropertiesFormat{}}
	for _, c := range conf.Properties.IPConfigurations {
		ipc := &armnetwork.InterfaceIPConfiguration{Name: c.Name, Properties: &armnetwork.InterfaceIPConfigurationPropertiesFormat{}}
		if c.Properties != nil {
			ipc.Properties.Primary = c.Properties.Primary
		}
		nic.Properties.IPConfigurations = append(nic.Properties.IPConfigurations, ipc)
	}
	_, n, hdr, err := s.writeNICLocked(r, sub, *cur.ID, nic)
	if err != nil {
		return 0, nil, nil, err
	}
	hdr.Set("Etag", *n.Etag)
	return 200, s.scaleSetView(id, instance, n), hdr, nil
}

func (s *Server) getScaleSetNIC(r *http.Request) (int, any, http.Header, error) {
	if err := checkCompute(r); err != nil {
		return 0, nil, nil, err
	}
	id := ScaleSetNICID(r.PathValue("sub"), r.PathValue("rg"), r.PathValue("ss"), r.PathValue("instance"), r.PathValue("nic"))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Gets++
	n, ok := s.nics[strings.ToLower(id)]
	if !ok {
		return 0, nil, nil, apiErr(404, "NotFound", "network interface "+id+" not found")
	}
	return 200, snapshot(n), http.Header{"Etag": {*n.Etag}}, nil
}

// MACFor gives a NIC a stable MAC from its primary address, in ARM's notation.
func MACFor(a netip.Addr) string {
	b := a.As4()
	return fmt.Sprintf("00-0D-3A-%02X-%02X-%02X", b[1], b[2], b[3])
}

// NICAddrsByID returns the secondary addresses of the NIC with ARM ID id (either shape).
func (s *Server) NICAddrsByID(id string) ([]netip.Addr, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nics[strings.ToLower(id)]
	if !ok {
		return nil, false
	}
	return secondaryAddrs(n), true
}
