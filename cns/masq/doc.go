// Package masq gives pods ip-masq-agent semantics on their node: traffic from the node
// (pods included) to any destination outside the non-masquerade CIDRs — the VNet by
// default — leaves with the node's primary address (SNAT, MASQUERADE), while traffic
// inside those CIDRs keeps the pod's own address. The rules live in one nftables table of
// the node's network namespace, replaced atomically, so a restart of cns re-applies them
// without a gap and nothing else's rules are touched.
package masq
