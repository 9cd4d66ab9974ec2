package store

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// commit is one caller's changes; with checkpoint set the caller also waits for every change
// logged so far to reach the state file (Load reads only the state file).
type commit struct {
	ops        []op
	checkpoint bool
	done       chan error
}

const (
	// maxGroup bounds one group commit so a flood cannot starve its first caller.
	maxGroup = 512
	// checkpointBytes is the log size at which the committer moves the log into the state
	// file: a bounded replay at start, for a few checkpoints a second at 10,000 pairs a
	// second (a pair logs about 300 bytes), each a transaction of a few thousand changes.
	checkpointBytes = 1 << 20
	lockTimeout     = 2 * time.Second
)

// committer makes each group of queued commits durable with one record in the log (one
// write, one fdatasync), and moves the log into the state file once it has grown to
// checkpointBytes, when a caller asks, and before it stops; then, the log empty, it marks the
// file schemaClosed.
func (s *Store) committer() {
	defer close(s.stopped)
	var rec []byte
	next := int64(checkpointBytes)
	for first := range s.reqs {
		group := []commit{first}
	drain:
		for len(group) < maxGroup {
			select {
			case c, ok := <-s.reqs:
				if !ok {
					break drain
				}
				group = append(group, c)
			default:
				break drain
			}
		}
		rec = newRecord(rec)
		asked := false
		for _, c := range group {
			rec = encodeOps(rec, c.ops)
			asked = asked || c.checkpoint
		}
		var err error
		if len(rec) > recordHeader {
			if s.log.rotate { // a write failed: a new generation before the next record
				err = checkpoint(s.db, s.log, nil)
			}
			if err == nil {
				err = s.log.append(rec)
			}
		}
		// The group's changes are durable in the log now: its callers are answered before a
		// checkpoint, which they need not wait for (it costs a bbolt transaction, two syncs
		// and the log's emptying: tens of milliseconds on a slow disk). Only callers that
		// asked for it wait for it. Commits queued meanwhile wait for the committer.
		var waiting []commit
		for _, c := range group {
			if c.checkpoint && err == nil {
				waiting = append(waiting, c)
				continue
			}
			c.done <- err
		}
		var cpErr error
		if err == nil && (asked || s.log.size >= next) { // asked: waiting has callers
			if cpErr = checkpoint(s.db, s.log, nil); cpErr != nil {
				s.logger.Warn("checkpoint of the change log failed; its changes stay durable in it", "err", cpErr)
				next = s.log.size + checkpointBytes // not again for every group while the disk is full
			} else {
				next = checkpointBytes
			}
		}
		for _, c := range waiting {
			c.done <- cpErr
		}
	}
	err := checkpoint(s.db, s.log, nil)
	if err == nil { // only with the log empty may the file say a cns without the log can read it
		err = markSchema(s.db, schemaClosed)
	}
	if err != nil {
		s.logger.Warn("checkpoint at close failed; the change log is replayed at the next start", "err", err)
		return
	}
	if err := s.log.shrink(); err != nil {
		s.logger.Warn("could not cut the emptied change log to its header; it holds nothing to replay", "err", err)
	}
}

// checkpoint applies the logged changes (read back from the log when nil) to the state file
// in one transaction and then empties the log.
func checkpoint(db *bolt.DB, lg *wal, ops []op) error {
	if ops == nil {
		var err error
		if ops, err = lg.changes(); err != nil {
			return err
		}
	}
	if len(ops) > 0 {
		if err := db.Update(func(tx *bolt.Tx) error { return applyOps(tx, ops) }); err != nil {
			return fmt.Errorf("checkpoint: %w", err)
		}
	}
	if lg.size <= logHeader && !lg.dirty && !lg.stale && !lg.rotate {
		return nil
	}
	return lg.reset()
}

func markSchema(db *bolt.DB, schema []byte) error {
	return db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, schema) })
}

// apply makes ops durable, in order and all or none, before it returns.
func (s *Store) apply(ops ...op) error {
	for _, o := range ops {
		if err := o.check(); err != nil {
			return fmt.Errorf("change to %s: %w", o.bucket.name(), err)
		}
	}
	return s.send(commit{ops: ops})
}

func (s *Store) send(c commit) error {
	c.done = make(chan error, 1)
	// The read lock is held only while queueing: Close waits for it, so no commit is sent
	// on a closed channel, and the committer drains the queue before it stops.
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	s.reqs <- c
	s.closeMu.RUnlock()
	return <-c.done
}
