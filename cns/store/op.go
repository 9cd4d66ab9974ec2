package store

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
)

// bucketID names a bucket in a logged change.
type bucketID byte

const (
	inAllocations bucketID = iota
	inCooldowns
	inReleases
	numBuckets
)

func (b bucketID) name() []byte {
	return [numBuckets][]byte{bucketAllocations, bucketCooldowns, bucketReleases}[b]
}

// op is one change to the state: a key set to a value, or deleted. Changes are applied in
// order and each sets its key outright, so applying a log again over a state that already
// holds some of it ends in the same state: a crash between a checkpoint and the log's reset
// needs nothing but replay.
type op struct {
	bucket bucketID
	del    bool
	key    []byte
	val    []byte
}

func put(b bucketID, key, val []byte) op { return op{bucket: b, key: key, val: val} }
func del(b bucketID, key []byte) op      { return op{bucket: b, del: true, key: key} }

// check refuses what bbolt would refuse at the checkpoint: a change that can never be applied
// must fail its own commit, not every checkpoint after it.
func (o op) check() error {
	switch {
	case len(o.key) == 0:
		return errors.New("empty key")
	case len(o.key) > bolt.MaxKeySize:
		return fmt.Errorf("key of %d bytes, at most %d", len(o.key), bolt.MaxKeySize)
	case len(o.val) > bolt.MaxValueSize:
		return fmt.Errorf("value of %d bytes, at most %d", len(o.val), bolt.MaxValueSize)
	}
	return nil
}

// encodeOps appends ops to a record's payload: per op a tag byte (bucket<<1 | delete), then the
// key and, for a put, the value, each as protowire bytes (uvarint length, then the bytes).
func encodeOps(rec []byte, ops []op) []byte {
	for _, o := range ops {
		tag := byte(o.bucket) << 1
		if o.del {
			tag |= 1
		}
		rec = protowire.AppendBytes(append(rec, tag), o.key)
		if !o.del {
			rec = protowire.AppendBytes(rec, o.val)
		}
	}
	return rec
}

// decodeOps appends the changes of one record's payload to ops. Keys and values alias payload.
func decodeOps(ops []op, payload []byte) ([]op, error) {
	b := payload
	field := func() ([]byte, error) {
		f, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, fmt.Errorf("field: %w", protowire.ParseError(n))
		}
		b = b[n:]
		return f, nil
	}
	for len(b) > 0 {
		tag := b[0]
		b = b[1:]
		o := op{bucket: bucketID(tag >> 1), del: tag&1 == 1}
		if o.bucket >= numBuckets {
			return nil, fmt.Errorf("unknown bucket %d", o.bucket)
		}
		var err error
		if o.key, err = field(); err == nil && !o.del {
			o.val, err = field()
		}
		if err != nil {
			return nil, err
		}
		ops = append(ops, o)
	}
	return ops, nil
}

// applyOps applies changes to the state file in order.
func applyOps(tx *bolt.Tx, ops []op) error {
	for _, o := range ops {
		b := tx.Bucket(o.bucket.name())
		var err error
		if o.del {
			err = b.Delete(o.key)
		} else {
			err = b.Put(o.key, o.val)
		}
		if err != nil {
			return fmt.Errorf("apply change to %s %q: %w", o.bucket.name(), o.key, err)
		}
	}
	return nil
}
