package imds

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// wire is the part of the instance metadata document cns reads.
type wire struct {
	Compute struct {
		SubscriptionID    string `json:"subscriptionId"`
		ResourceGroupName string `json:"resourceGroupName"`
		Name              string `json:"name"`
		ResourceID        string `json:"resourceId"`
		Location          string `json:"location"`
		VMScaleSetName    string `json:"vmScaleSetName"`
	} `json:"compute"`
	Network struct {
		Interface []struct {
			MACAddress string `json:"macAddress"`
			IPv4       struct {
				IPAddress []struct {
					PrivateIPAddress string `json:"privateIpAddress"`
				} `json:"ipAddress"`
			} `json:"ipv4"`
		} `json:"interface"`
	} `json:"network"`
}

// parse reads an instance document and names every field that is missing.
func parse(body []byte) (Instance, error) {
	var w wire
	if err := json.Unmarshal(body, &w); err != nil {
		return Instance{}, fmt.Errorf("not instance metadata JSON: %w", err)
	}
	c := w.Compute
	inst := Instance{SubscriptionID: c.SubscriptionID, ResourceGroup: c.ResourceGroupName, Name: c.Name,
		ResourceID: c.ResourceID, Location: c.Location, ScaleSet: c.VMScaleSetName}
	var missing []string
	for name, v := range map[string]string{"compute.subscriptionId": c.SubscriptionID,
		"compute.resourceGroupName": c.ResourceGroupName, "compute.name": c.Name} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if inst.ScaleSet != "" {
		inst.InstanceID = instanceID(c.ResourceID, c.Name, c.VMScaleSetName)
		if inst.InstanceID == "" {
			missing = append(missing, "the scale-set instance ID (compute.resourceId or compute.name <scaleSet>_<id>)")
		}
	}
	if len(w.Network.Interface) == 0 {
		missing = append(missing, "network.interface")
	} else {
		nic := w.Network.Interface[0]
		mac, err := ParseMAC(nic.MACAddress)
		if err != nil {
			missing = append(missing, "network.interface[0].macAddress ("+err.Error()+")")
		}
		inst.MAC = mac
		for _, a := range nic.IPv4.IPAddress {
			if ip, err := netip.ParseAddr(a.PrivateIPAddress); err == nil && ip.Is4() {
				inst.Addresses = append(inst.Addresses, ip)
			}
		}
	}
	if len(missing) > 0 {
		return inst, fmt.Errorf("missing %s", strings.Join(slices.Sorted(slices.Values(missing)), ", "))
	}
	return inst, nil
}

// instanceID finds a uniform scale-set VM's instance ID: the last segment of
// .../virtualMachineScaleSets/<ss>/virtualMachines/<id>, else the suffix of "<ss>_<id>".
func instanceID(resourceID, name, scaleSet string) string {
	parts := strings.Split(strings.Trim(resourceID, "/"), "/")
	for i := 0; i+3 < len(parts); i++ {
		if strings.EqualFold(parts[i], "virtualMachineScaleSets") && strings.EqualFold(parts[i+2], "virtualMachines") {
			return parts[i+3]
		}
	}
	if id, ok := strings.CutPrefix(name, scaleSet+"_"); ok && id != "" {
		return id
	}
	return ""
}

// ParseMAC reads a MAC the way Azure writes them: IMDS "000D3AF806EC", ARM "00-0D-3A-F8-06-EC",
// or with colons.
func ParseMAC(s string) (net.HardwareAddr, error) {
	hex := strings.NewReplacer("-", "", ":", "").Replace(s)
	if len(hex) != 12 {
		return nil, errors.New("not a MAC address: " + fmt.Sprintf("%q", s))
	}
	var b strings.Builder
	for i := 0; i < 12; i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(hex[i : i+2])
	}
	return net.ParseMAC(b.String())
}
