package mockarm

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"
)

// apiError is an ARM error answer.
type apiError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter int // seconds
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

// subnet hands out addresses of one prefix the way Azure does: lowest free first, never the
// network address, the three after it (gateway and DNS), or the broadcast address.
type subnet struct {
	prefix netip.Prefix
	used   map[netip.Addr]string // address → owning ip configuration ID
}

func newSubnet(p netip.Prefix) *subnet {
	return &subnet{prefix: p.Masked(), used: map[netip.Addr]string{}}
}

func (s *subnet) usable(a netip.Addr) bool {
	if !s.prefix.Contains(a) {
		return false
	}
	first := s.prefix.Addr()
	for range 4 {
		if a == first {
			return false
		}
		first = first.Next()
	}
	return a != lastAddr(s.prefix)
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Gateway is the VNet gateway of p: its first usable address (x.x.x.1).
func Gateway(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

func (s *subnet) take(a netip.Addr, owner string) error {
	if !s.usable(a) {
		return apiErr(400, "InvalidPrivateIPAddress", fmt.Sprintf("%s is not a usable address of subnet %s", a, s.prefix))
	}
	if o, ok := s.used[a]; ok && o != owner {
		return apiErr(400, "PrivateIPAddressInUse", fmt.Sprintf("%s is in use by %s", a, o))
	}
	s.used[a] = owner
	return nil
}

func (s *subnet) next(owner string) (netip.Addr, error) {
	for a := s.prefix.Addr(); s.prefix.Contains(a); a = a.Next() {
		if _, taken := s.used[a]; !taken && s.usable(a) {
			s.used[a] = owner
			return a, nil
		}
	}
	return netip.Addr{}, apiErr(400, "SubnetIsFull", fmt.Sprintf("subnet %s has no free address", s.prefix))
}

func newETag() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return `W/"` + hex.EncodeToString(b[:]) + `"`
}

func ptr[T any](v T) *T { return &v }

// nicAddrs returns every address of a NIC's ip configurations keyed by configuration name.
func nicAddrs(n *armnetwork.Interface) map[string]netip.Addr {
	out := map[string]netip.Addr{}
	if n == nil || n.Properties == nil {
		return out
	}
	for _, c := range n.Properties.IPConfigurations {
		if c == nil || c.Name == nil || c.Properties == nil || c.Properties.PrivateIPAddress == nil {
			continue
		}
		if a, err := netip.ParseAddr(*c.Properties.PrivateIPAddress); err == nil {
			out[*c.Name] = a
		}
	}
	return out
}

// primaryAddr returns the address of the NIC's primary ip configuration.
func primaryAddr(n *armnetwork.Interface) netip.Addr {
	for _, c := range n.Properties.IPConfigurations {
		if c.Properties != nil && c.Properties.Primary != nil && *c.Properties.Primary && c.Properties.PrivateIPAddress != nil {
			a, _ := netip.ParseAddr(*c.Properties.PrivateIPAddress)
			return a
		}
	}
	return netip.Addr{}
}

// apply computes the NIC that results from a PUT of body over cur (nil for a new NIC),
// taking and freeing subnet addresses. On error nothing has changed.
func (s *subnet) apply(id string, cur, body *armnetwork.Interface, subnetID string, maxConfigs int) (*armnetwork.Interface, error) {
	if body.Properties == nil || len(body.Properties.IPConfigurations) == 0 {
		return nil, apiErr(400, "InvalidRequestFormat", "a NIC needs at least one ip configuration")
	}
	confs := body.Properties.IPConfigurations
	if len(confs) > maxConfigs {
		return nil, apiErr(400, "MaxIPConfigurationsPerNicLimitReached",
			fmt.Sprintf("%d ip configurations requested; a NIC holds at most %d", len(confs), maxConfigs))
	}
	old := nicAddrs(cur)
	names := map[string]bool{}
	primaries := 0
	for _, c := range confs {
		if c == nil || c.Name == nil || *c.Name == "" {
			return nil, apiErr(400, "InvalidRequestFormat", "every ip configuration needs a name")
		}
		if names[strings.ToLower(*c.Name)] {
			return nil, apiErr(400, "DuplicateResourceName", "ip configuration "+*c.Name+" appears twice")
		}
		names[strings.ToLower(*c.Name)] = true
		if c.Properties != nil && c.Properties.Primary != nil && *c.Properties.Primary {
			primaries++
		}
	}
	if primaries != 1 {
		return nil, apiErr(400, "NicMustHaveExactlyOnePrimaryIpConfiguration", fmt.Sprintf("%d primary ip configurations", primaries))
	}
	// Take the addresses of the new configurations; roll back on the first failure.
	var taken []netip.Addr
	undo := func() {
		for _, a := range taken {
			delete(s.used, a)
		}
	}
	out := make([]*armnetwork.InterfaceIPConfiguration, 0, len(confs))
	for _, c := range confs {
		cid := id + "/ipConfigurations/" + *c.Name
		props := armnetwork.InterfaceIPConfigurationPropertiesFormat{}
		if c.Properties != nil {
			props = *c.Properties
		}
		a, existed := old[*c.Name]
		v6 := props.PrivateIPAddressVersion != nil && *props.PrivateIPAddressVersion == armnetwork.IPVersionIPv6
		switch {
		case existed:
		case v6:
			// IPv6 configurations (dual-stack NICs) draw from an IPv6 subnet mockarm does not
			// model: the caller names the address.
			var err error
			if props.PrivateIPAddress == nil {
				err = fmt.Errorf("IPv6 ip configuration %s needs a privateIPAddress in mockarm", *c.Name)
			} else if a, err = netip.ParseAddr(*props.PrivateIPAddress); err == nil && !a.Is6() {
				err = fmt.Errorf("%s is not an IPv6 address", a)
			}
			if err != nil {
				undo()
				return nil, apiErr(400, "InvalidPrivateIPAddress", err.Error())
			}
		case props.PrivateIPAddress != nil && *props.PrivateIPAddress != "":
			var err error
			if a, err = netip.ParseAddr(*props.PrivateIPAddress); err != nil {
				undo()
				return nil, apiErr(400, "InvalidPrivateIPAddress", err.Error())
			}
			if err := s.take(a, cid); err != nil {
				undo()
				return nil, err
			}
			taken = append(taken, a)
		default:
			var err error
			if a, err = s.next(cid); err != nil {
				undo()
				return nil, err
			}
			taken = append(taken, a)
		}
		method := armnetwork.IPAllocationMethodDynamic
		if props.PrivateIPAllocationMethod != nil {
			method = *props.PrivateIPAllocationMethod
		}
		props.PrivateIPAddress = ptr(a.String())
		props.PrivateIPAllocationMethod = &method
		props.PrivateIPAddressVersion = ptr(armnetwork.IPVersionIPv4)
		if a.Is6() {
			props.PrivateIPAddressVersion = ptr(armnetwork.IPVersionIPv6)
		}
		props.Subnet = &armnetwork.Subnet{ID: ptr(subnetID)}
		props.ProvisioningState = ptr(armnetwork.ProvisioningStateSucceeded)
		if props.Primary == nil {
			props.Primary = ptr(false)
		}
		out = append(out, &armnetwork.InterfaceIPConfiguration{ID: ptr(cid), Name: c.Name, Properties: &props,
			Type: ptr("Microsoft.Network/networkInterfaces/ipConfigurations")})
	}
	// Free what the new NIC no longer holds.
	for name, a := range old {
		if !names[strings.ToLower(name)] {
			delete(s.used, a)
		}
	}
	n := &armnetwork.Interface{ID: ptr(id), Name: ptr(id[strings.LastIndex(id, "/")+1:]), Location: body.Location,
		Type: ptr("Microsoft.Network/networkInterfaces"), Etag: ptr(newETag()),
		Properties: &armnetwork.InterfacePropertiesFormat{IPConfigurations: out,
			ProvisioningState: ptr(armnetwork.ProvisioningStateSucceeded)}}
	// The MAC and the owning VM are the platform's, not the writer's: they survive every PUT.
	if src := cmp.Or(cur, body); src.Properties != nil {
		n.Properties.MacAddress, n.Properties.VirtualMachine = src.Properties.MacAddress, src.Properties.VirtualMachine
	}
	return n, nil
}

// secondaryAddrs lists a NIC's non-primary IPv4 addresses (the ones the fabric routes),
// sorted.
func secondaryAddrs(n *armnetwork.Interface) []netip.Addr {
	p := primaryAddr(n)
	var out []netip.Addr
	for _, a := range nicAddrs(n) {
		if a != p && a.Is4() {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func apiErr(status int, code, msg string) *apiError {
	return &apiError{Status: status, Code: code, Message: msg}
}
