package cnsv1

import "time"

// Contracts between the plugin and cns that are not RPCs. They live beside the API so both
// sides import one definition; the plugin must not import cns (it stays light).

// ErrorDomain is the google.rpc.ErrorInfo domain cns puts on every status it returns, so a
// client can tell cns's answers from failures of the transport.
const ErrorDomain = "cns.vnet-cni"

// HostVethAliasPrefix starts the alias the plugin gives every host veth:
// "vnet-cni:<containerID>/<ifname>". With the veth's IP/32 route it lets cns rebuild its
// allocations from the node's datapath when its state file is lost.
const HostVethAliasPrefix = "vnet-cni:"

// SpoolRecord is a release the plugin could not deliver because cns was unreachable: one JSON
// file per key in the release spool directory, replayed and removed by cns. A record releases
// only an allocation older than At, so a later ADD of the same key is never undone.
type SpoolRecord struct {
	ContainerID string    `json:"containerID"`
	IfName      string    `json:"ifname"`
	At          time.Time `json:"at"`
}
