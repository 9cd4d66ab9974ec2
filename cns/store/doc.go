// Package store is cns's durable state in one bbolt file: allocations (who holds which
// address), cooldown deadlines and addresses pending release from the NIC. Available
// addresses are not stored: the NIC is their source of truth.
//
// Every change is a transaction committed (fsynced) before the call returns. Concurrent
// changes are group-committed: one committer goroutine folds whatever is queued into one
// transaction, so a lone caller pays one fsync and a crowd shares them.
package store
