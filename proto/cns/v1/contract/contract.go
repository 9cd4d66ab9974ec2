// Package contract holds what the plugin and cns agree on outside the RPCs: the host veth's
// label, the limits of an attachment's identity, the release spool's records and the domain
// of cns's error details. It lives beside the API so both sides import one definition, and
// apart from the generated messages (package cnsv1): the plugin, exec'd for every pod, links
// neither cns nor protobuf's runtime and registry.
package contract

import (
	"strings"
	"time"
)

// ErrorDomain is the google.rpc.ErrorInfo domain cns puts on every status it returns, so a
// client can tell cns's answers from failures of the transport.
const ErrorDomain = "cns.vnet-cni"

// HostVethAliasPrefix starts the legacy alias of host veths made before networks were
// recorded: "vnet-cni:<containerID>/<ifname>". Still parsed; no longer written by ADD.
const HostVethAliasPrefix = "vnet-cni:"

// HostVethAliasPrefixV2 starts the alias the plugin gives every host veth:
// "vnet-cni.v2:<network>/<containerID>/<ifname>". With the veth's IP/32 route it lets cns
// rebuild its allocations from the node's datapath when its state file is lost, and it lets
// the plugin's GC delete only veths of the network being collected. The prefix differs from
// the legacy one at its 9th byte, so no legacy label parses as a v2 label.
const HostVethAliasPrefixV2 = "vnet-cni.v2:"

// Limits of the attachment identity. The kernel refuses an alias of IFALIASZ (256) bytes or
// more, so the v2 label must fit in 255: 12 + 96 + 1 + 128 + 1 + 15 = 253.
const (
	MaxNetworkName = 96  // the conflist name; CNI allows [a-zA-Z0-9][a-zA-Z0-9_.-]*
	MaxContainerID = 128 // containerd, CRI-O and podman use 64 hex characters
	MaxIfName      = 15  // IFNAMSIZ - 1
	maxAlias       = 255 // IFALIASZ - 1
)

// HostVethAlias is the v2 label of an attachment's host veth. None of the parts may contain
// '/'; callers validate them first (an over-long result is what the kernel would refuse).
func HostVethAlias(network, containerID, ifname string) string {
	return HostVethAliasPrefixV2 + network + "/" + containerID + "/" + ifname
}

// ParseHostVethAlias reads a v2 or a legacy label. A legacy label has no network: network is
// "" and legacy is true.
func ParseHostVethAlias(alias string) (network, containerID, ifname string, legacy, ok bool) {
	if rest, found := strings.CutPrefix(alias, HostVethAliasPrefixV2); found {
		parts := strings.Split(rest, "/")
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			return "", "", "", false, false
		}
		return parts[0], parts[1], parts[2], false, true
	}
	if rest, found := strings.CutPrefix(alias, HostVethAliasPrefix); found {
		// ifname never holds '/', so the last one splits even an old ID that had one.
		i := strings.LastIndexByte(rest, '/')
		if i <= 0 || i == len(rest)-1 {
			return "", "", "", false, false
		}
		return "", rest[:i], rest[i+1:], true, true
	}
	return "", "", "", false, false
}

// AliasFits reports whether the v2 label of the attachment fits the kernel's alias limit.
func AliasFits(network, containerID, ifname string) bool {
	return len(HostVethAlias(network, containerID, ifname)) <= maxAlias
}

// SpoolRecord is a release the plugin could not deliver because cns was unreachable: one JSON
// file per key in the release spool directory, replayed and removed by cns. A record releases
// only an allocation older than At, so a later ADD of the same key is never undone.
// Network (added later; absent in older records) names the CNI network of the DEL.
type SpoolRecord struct {
	ContainerID string    `json:"containerID"`
	IfName      string    `json:"ifname"`
	At          time.Time `json:"at"`
	Network     string    `json:"network,omitempty"`
}
