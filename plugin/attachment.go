package plugin

import (
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnet-cni/vnet-cni/proto/cns/v1/contract"
)

// An attachment is CNI's unit: (network, container ID, ifname). The host veth is named from
// (container ID, ifname) and labelled with all three (contract.HostVethAlias), so DEL and GC
// can tell one network's veths from another's without any state of their own.

// checkAttachment refuses, before anything is allocated, an attachment whose label would not
// fit the kernel's 255-byte alias or could not be parsed back: '/' separates the label's
// parts, and CNI allows it in none of them. A bad network name is a config error (7), a bad
// container ID or ifname an environment error (4).
func checkAttachment(network, containerID, ifname string) error {
	switch {
	case network == "" || len(network) > contract.MaxNetworkName || strings.ContainsAny(network, "/ \t\n"):
		return fmt.Errorf("%w: network name %q: want 1..%d characters without '/' or spaces", errConfig, network, contract.MaxNetworkName)
	case containerID == "" || len(containerID) > contract.MaxContainerID || strings.ContainsAny(containerID, "/ \t\n"):
		return fmt.Errorf("%w: container ID %q: want 1..%d characters without '/' or spaces", errEnv, containerID, contract.MaxContainerID)
	case ifname == "" || len(ifname) > contract.MaxIfName || strings.ContainsAny(ifname, "/ \t\n:") || ifname == "." || ifname == "..":
		return fmt.Errorf("%w: interface name %q: want 1..%d characters, no '/', ':' or spaces", errEnv, ifname, contract.MaxIfName)
	case !contract.AliasFits(network, containerID, ifname):
		return fmt.Errorf("%w: network %q, container ID and ifname do not fit the host veth's 255-byte label", errEnv, network)
	}
	return nil
}

// otherNetwork tells a host veth label (alias) that names a network other than network: DEL
// must then leave the veth, and its address, to that network.
func otherNetwork(alias, network string) bool {
	net, _, _, legacy, ok := contract.ParseHostVethAlias(alias)
	return ok && !legacy && net != network
}

// sweepNetworkVeths deletes the host veths labelled for network whose attachment is not in
// keep, and returns their names. Veths of other networks, legacy labels (which name no
// network: DEL still removes them) and unlabelled links are never touched. One netlink
// socket serves the listing and every deletion.
func sweepNetworkVeths(network string, keep map[types.GCAttachment]bool) ([]string, error) {
	nl, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket in the node namespace: %w", err)
	}
	defer nl.Close()
	links, err := nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var removed []string
	var errs []error
	for _, l := range links {
		if _, veth := l.(*netlink.Veth); !veth {
			continue
		}
		net, cid, ifname, legacy, ok := contract.ParseHostVethAlias(l.Attrs().Alias)
		if !ok || legacy || net != network || keep[types.GCAttachment{ContainerID: cid, IfName: ifname}] {
			continue
		}
		if err := nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %s: %w", l.Attrs().Name, err))
			continue
		}
		removed = append(removed, l.Attrs().Name)
	}
	return removed, errors.Join(errs...)
}

// mergePrevResult chains our result after prev (CNI 1.1: a plugin that is not first in the
// list receives the previous plugins' result and must pass it on): prev's interfaces, IPs,
// routes and DNS are kept, ours are appended with interface indexes shifted past prev's.
func mergePrevResult(prev types.Result, ours *current.Result) (*current.Result, error) {
	if prev == nil {
		return ours, nil
	}
	p, err := current.NewResultFromResult(prev)
	if err != nil {
		return nil, fmt.Errorf("%w: prevResult: %w", errConfig, err)
	}
	out := *p
	out.CNIVersion = ours.CNIVersion
	shift := len(out.Interfaces)
	out.Interfaces = append(append([]*current.Interface{}, out.Interfaces...), ours.Interfaces...)
	out.IPs = append([]*current.IPConfig{}, out.IPs...)
	for _, c := range ours.IPs {
		c := *c
		if c.Interface != nil {
			c.Interface = current.Int(*c.Interface + shift)
		}
		out.IPs = append(out.IPs, &c)
	}
	out.Routes = append(append([]*types.Route{}, out.Routes...), ours.Routes...)
	if len(out.DNS.Nameservers) == 0 && out.DNS.Domain == "" && len(out.DNS.Search) == 0 && len(out.DNS.Options) == 0 {
		out.DNS = ours.DNS
	}
	return &out, nil
}
