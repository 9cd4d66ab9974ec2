package masq

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Table is the nftables table (family ip) that holds the rules.
const Table = "vnet-cni-masq"

// LinkLocal is never masqueraded (ip-masq-agent's masqLinkLocal: false): a pod's traffic to
// link-local addresses (IMDS, the pod's own gateway) stays on the node with its own address.
var LinkLocal = netip.MustParsePrefix("169.254.0.0/16")

// private are RFC 1918's ranges: where a VNet's address space almost always lies, and where
// peered VNets and on-premises networks reached over a gateway route pod addresses back.
var private = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("192.168.0.0/16"),
}

// DefaultNonMasq is the non-masquerade list when the operator gives none: RFC 1918's ranges
// (so no VNet in private space, its other subnets and its peerings included, is ever NATed),
// plus the node's subnet when that lies outside them (a VNet in public space). An operator
// whose VNet uses public space beyond this subnet, or who wants private destinations outside
// the VNet NATed, sets --non-masquerade-cidrs to the VNet's address space instead. An invalid
// subnet (not known yet) adds nothing.
func DefaultNonMasq(subnet netip.Prefix) []netip.Prefix {
	out := slices.Clone(private)
	if !subnet.IsValid() || !subnet.Addr().Is4() {
		return out
	}
	for _, p := range private {
		if p.Contains(subnet.Addr()) && p.Bits() <= subnet.Bits() {
			return out
		}
	}
	return append(out, subnet.Masked())
}

// Exprs returns the rule expressions, in order: keep loopback, link-local and every
// non-masquerade CIDR unchanged, masquerade the rest. Pure: Apply writes them.
func Exprs(nonMasq []netip.Prefix) [][]expr.Any {
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	lo := make([]byte, 16)
	copy(lo, "lo")
	rules := [][]expr.Any{{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: lo},
		ret,
	}}
	for _, p := range append([]netip.Prefix{LinkLocal}, nonMasq...) {
		p = p.Masked()
		m := make([]byte, 4)
		for i := range p.Bits() {
			m[i/8] |= 0x80 >> (i % 8)
		}
		rules = append(rules, []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
			ret,
		})
	}
	return append(rules, []expr.Any{&expr.Masq{}})
}

// Validate rejects what the rules cannot express.
func Validate(nonMasq []netip.Prefix) error {
	for _, p := range nonMasq {
		if !p.IsValid() || !p.Addr().Is4() {
			return fmt.Errorf("non-masquerade CIDR %s: want an IPv4 prefix", p)
		}
	}
	return nil
}

// Apply replaces the table's rules with Exprs(nonMasq) in one transaction, in the network
// namespace of the calling thread.
func Apply(nonMasq []netip.Prefix) error {
	if err := Validate(nonMasq); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: Table}
	// Add, delete, add: the table is new whether or not it existed, in one batch.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	ch := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	for _, e := range Exprs(slices.Clone(nonMasq)) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: e})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table %s: %w", Table, err)
	}
	return nil
}

// Remove deletes the table when it exists, and reports whether it did. When there is none it
// only reads: a cns started without --ip-masq (outside a node, in a test) changes nothing.
func Remove() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("nftables: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, fmt.Errorf("nftables: list tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == Table }) {
		return false, nil
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: Table})
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("nftables: delete table %s: %w", Table, err)
	}
	return true, nil
}
