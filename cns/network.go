package cns

import (
	"errors"
	"fmt"

	"github.com/vnet-cni/vnet-cni/cns/store"
	"github.com/vnet-cni/vnet-cni/ipampool"
)

// DefaultLegacyNetwork is the name of the conflist cns shipped with (cmd/vnet-cni), the
// network of every allocation recorded before networks were.
const DefaultLegacyNetwork = "vnet"

func (m *Manager) legacyNetwork() string {
	if m.cfg.LegacyNetwork != "" {
		return m.cfg.LegacyNetwork
	}
	return DefaultLegacyNetwork
}

// conflict refuses a RequestIPs for a key that is already held by another attachment: a
// different CNI network, or a different pod network namespace (when both are known). Handing
// back the held address would let the caller build a second datapath for it, and its
// rollback would tear down the live pod's.
func conflict(held, req ipampool.Owner) error {
	if held.Network != req.Network {
		return fmt.Errorf("%w: %s/%s already holds an address for network %q, not %q; DEL it from that network first",
			ErrConflict, req.ContainerID, req.IfName, held.Network, req.Network)
	}
	if held.Netns != "" && req.Netns != "" && held.Netns != req.Netns {
		return fmt.Errorf("%w: %s/%s already holds an address for netns %s, not %s; DEL the old sandbox first",
			ErrConflict, req.ContainerID, req.IfName, held.Netns, req.Netns)
	}
	return nil
}

// migrateNetworks gives every allocation recorded without a network (a v1 store record, or a
// legacy host veth label recovered from the datapath) the legacy network, and rewrites its
// record durably as the current version. A failed rewrite is logged: the allocation is still
// restored with the legacy network, and the next start migrates it again.
func (m *Manager) migrateNetworks(allocs []store.Allocation) []store.Allocation {
	legacy := m.legacyNetwork()
	migrated := 0
	var errs []error
	for i := range allocs {
		if allocs[i].Owner.Network != "" {
			continue
		}
		allocs[i].Owner.Network = legacy
		if err := m.store.PutAllocation(allocs[i]); err != nil {
			errs = append(errs, err)
			continue
		}
		migrated++
	}
	if migrated > 0 || len(errs) > 0 {
		m.log.Info("migrated allocations recorded without a network", "network", legacy, "migrated", migrated,
			"err", errors.Join(errs...))
	}
	return allocs
}

// GarbageCollect releases every allocation of network whose key is not in valid; the
// allocations of other networks are not looked at (CNI's valid-attachments lists only the
// attachments of the network being collected). An empty network collects every network, as
// plugins that predate the field expect.
func (m *Manager) GarbageCollect(network string, valid map[ipampool.Key]bool) (released, kept int, err error) {
	m.mu.Lock()
	var owners []ipampool.Key
	for _, k := range m.pool.Owners() {
		if e, ok := m.pool.Lookup(k); ok && (network == "" || e.Owner.Network == network) {
			owners = append(owners, k)
		}
	}
	m.mu.Unlock()
	var errs []error
	for _, k := range owners {
		if valid[k] {
			kept++
			continue
		}
		ok, err := m.ReleaseNetworkIP(k, network)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			released++
			m.log.Info("garbage-collected allocation", "network", network, "containerID", k.ContainerID, "ifname", k.IfName)
		}
	}
	return released, kept, errors.Join(errs...)
}
