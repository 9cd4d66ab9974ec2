// Package controller is cluster mode's one writer of ARM (cmd/vnet-controller). It applies each
// node's NodeNetworkConfig spec to the node's NIC and reports the NIC in the status:
//
//   - Reconciler: read the NIC, plan one write (PlanFor: add to the requested count, remove only
//     addresses the node listed), write it, report; one node at a time per worker, so spec
//     changes arriving during a write fold into the next one. Answered nodes are re-read about
//     once per resync period (resync.go) so out-of-band changes reach the status.
//   - Discoverer: a node's NIC from its Node's spec.providerID, with cns's own azure discovery
//     and backends (standalone VM or uniform scale-set instance).
//   - Budget and Transport: the cluster-wide ARM write budget, shaped like ARM's bucket and
//     corrected by ARM's Retry-After and remaining-writes answers.
//   - Run: controller-runtime manager, leader election on a Lease, metrics, health.
package controller
