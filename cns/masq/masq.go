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

// Exprs returns the rule expressions, in order: keep loopback and every non-masquerade
// CIDR unchanged, masquerade the rest. Pure: Apply writes them.
func Exprs(nonMasq []netip.Prefix) [][]expr.Any {
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	lo := make([]byte, 16)
	copy(lo, "lo")
	rules := [][]expr.Any{{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: lo},
		ret,
	}}
	for _, p := range nonMasq {
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

// Remove deletes the table; a missing one is fine.
func Remove() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: Table}
	c.AddTable(t)
	c.DelTable(t)
	return c.Flush()
}
