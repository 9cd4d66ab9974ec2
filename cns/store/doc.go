// Package store is cns's durable state: allocations (who holds which address), cooldown
// deadlines and addresses pending release from the NIC, in one bbolt file and a change log
// beside it (<state>.wal). Available addresses are not stored: the NIC is their source of truth.
//
// Every change is durable before the call returns. Concurrent changes are group-committed:
// one committer goroutine appends whatever is queued to the log as one checksummed record and
// makes it durable with one fdatasync, so a lone caller pays one sync and a crowd shares it.
// A bbolt transaction would pay two (its pages, then its meta page). Once the log reaches
// checkpointBytes the committer applies it to the bbolt file in one transaction and empties
// it, after answering the group whose record got it there (that group is durable in the log;
// only a caller that asked for the checkpoint waits for it); Open does the same with whatever
// a crash left. Changes set or delete keys outright, so a log replayed over a state that
// already holds it ends in the same state. Only the last record can be torn by a crash and is
// dropped (it was never acknowledged); damage before the end rebuilds the state, as a damaged
// bbolt file does.
package store
