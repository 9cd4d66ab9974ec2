package store

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/vnet-cni/vnet-cni/ipampool"
)

var (
	bucketAllocations = []byte("allocations")
	bucketCooldowns   = []byte("cooldowns")
	bucketReleases    = []byte("pending-releases")
	bucketMeta        = []byte("meta")
	keySchema         = []byte("schema")
	// schemaVersion 2: allocation records are versioned (record.go) and carry the network.
	// A schema 1 file is read (its v1 records are migrated); a cns that reads only schema 1
	// refuses a schema 2 file rather than misreading its records.
	schemaVersion = []byte("2")
	schemaV1      = []byte("1")
)

// Allocation is one assigned address; its disk form is allocRecord (record.go).
type Allocation struct {
	Addr       netip.Addr
	Owner      ipampool.Owner
	AssignedAt time.Time
}

// State is everything the store holds.
type State struct {
	Allocations     []Allocation
	Cooldowns       map[netip.Addr]time.Time
	PendingReleases []netip.Addr
}

// Store is the durable state. Its methods are safe for concurrent use.
type Store struct {
	db      *bolt.DB
	reqs    chan commit
	stopped chan struct{}
}

type commit struct {
	fn   func(*bolt.Tx) error
	done chan error
}

// maxGroup bounds one group commit so a flood cannot starve its first caller.
const maxGroup = 512

// Open opens (creating if needed) the state file at path. A file that bbolt cannot read is
// moved aside to path.corrupt-<time> and a new one is created; movedAside names it, and the
// caller must rebuild from the NIC and say so loudly.
func Open(path string, log *slog.Logger) (s *Store, movedAside string, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, "", fmt.Errorf("create state directory: %w", err)
	}
	db, err := openChecked(path)
	if err != nil && isCorrupt(err) {
		movedAside = fmt.Sprintf("%s.corrupt-%s", path, time.Now().UTC().Format("20060102T150405Z"))
		log.Error("state file unreadable, moving it aside and rebuilding from the NIC",
			"path", path, "movedTo", movedAside, "err", err)
		if rerr := os.Rename(path, movedAside); rerr != nil {
			return nil, "", fmt.Errorf("move corrupt state %s aside: %w (open: %w)", path, rerr, err)
		}
		db, err = openChecked(path)
	}
	if err != nil {
		return nil, "", fmt.Errorf("open state %s: %w", path, err)
	}
	s = &Store{db: db, reqs: make(chan commit, maxGroup), stopped: make(chan struct{})}
	go s.committer()
	return s, movedAside, nil
}

func openDB(path string) (*bolt.DB, error) {
	// The freelist stays synced: without it bbolt rebuilds the freelist at open on a goroutine
	// of its own, where a damaged page panics beyond any recover (see openChecked).
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketAllocations, bucketCooldowns, bucketReleases, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v != nil && string(v) != string(schemaVersion) && string(v) != string(schemaV1) {
			return fmt.Errorf("state schema %q, this cns reads %q", v, schemaVersion)
		}
		return meta.Put(keySchema, schemaVersion)
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// errCorrupt marks a file whose pages are damaged (bbolt faulted or its check failed).
var errCorrupt = errors.New("state file is corrupt")

// openChecked opens the file and reads every page before it is trusted. bbolt reads its
// file through mmap: a torn file whose meta pages survive faults (SIGBUS) when a cut-off
// page is touched, which would kill the process on every start. On a dedicated goroutine
// with SetPanicOnFault that fault is a panic, recovered here as corruption.
func openChecked(path string) (db *bolt.DB, err error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		debug.SetPanicOnFault(true) // this goroutine only
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%w: %v", errCorrupt, r) // a half-opened db is abandoned, not closed
			}
		}()
		if db, err = openDB(path); err != nil {
			return
		}
		// Touch every page on this goroutine: bbolt's own tx.Check runs on another one,
		// where a fault or a failed page assertion cannot be recovered.
		err = db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
				return b.ForEach(func(_, _ []byte) error { return nil })
			})
		})
		if err != nil {
			db.Close()
			db = nil
		}
	}()
	<-done
	return db, err
}

// isCorrupt tells a damaged file from an operational failure (lock held, permissions, I/O),
// which must never cause the state to be discarded.
func isCorrupt(err error) bool {
	return errors.Is(err, errCorrupt) || errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) ||
		errors.Is(err, berrors.ErrVersionMismatch) || strings.HasPrefix(err.Error(), "file size too small")
}

// Close stops the committer after queued commits finish and closes the file.
func (s *Store) Close() error {
	close(s.reqs)
	<-s.stopped
	return s.db.Close()
}

func (s *Store) committer() {
	defer close(s.stopped)
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
		err := s.db.Update(func(tx *bolt.Tx) error {
			for _, c := range group {
				if err := c.fn(tx); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil || len(group) == 1 {
			for _, c := range group {
				c.done <- err
			}
			continue
		}
		// One change failed and took the group down: commit each alone so only it fails.
		for _, c := range group {
			c.done <- s.db.Update(c.fn)
		}
	}
}

// apply commits fn and returns once it is durable. fn must only touch tx.
func (s *Store) apply(fn func(*bolt.Tx) error) error {
	done := make(chan error, 1)
	s.reqs <- commit{fn: fn, done: done}
	return <-done
}

func allocKey(k ipampool.Key) []byte { return []byte(k.ContainerID + "\x00" + k.IfName) }

// PutAllocation records that a.Owner holds a.Addr (and ends any cooldown record of it).
func (s *Store) PutAllocation(a Allocation) error {
	v, err := encodeAllocation(a)
	if err != nil {
		return fmt.Errorf("encode allocation: %w", err)
	}
	if err := s.apply(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketCooldowns).Delete([]byte(a.Addr.String())); err != nil {
			return err
		}
		return tx.Bucket(bucketAllocations).Put(allocKey(a.Owner.Key), v)
	}); err != nil {
		return fmt.Errorf("commit allocation of %s: %w", a.Addr, err)
	}
	return nil
}

// ReleaseAllocation removes k's allocation and, when until is set, records the address's
// cooldown deadline, in one transaction.
func (s *Store) ReleaseAllocation(k ipampool.Key, addr netip.Addr, until time.Time) error {
	err := s.apply(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketAllocations).Delete(allocKey(k)); err != nil {
			return err
		}
		if until.IsZero() {
			return tx.Bucket(bucketCooldowns).Delete([]byte(addr.String()))
		}
		return tx.Bucket(bucketCooldowns).Put([]byte(addr.String()), []byte(until.UTC().Format(time.RFC3339Nano)))
	})
	if err != nil {
		return fmt.Errorf("commit release of %s: %w", addr, err)
	}
	return nil
}

// MarkPendingRelease records addresses about to be removed from the NIC, before the write.
func (s *Store) MarkPendingRelease(addrs []netip.Addr) error {
	return s.setReleases(addrs, true)
}

// ForgetAddrs drops every record of addresses that left the pool (released from the NIC,
// or never removed after all): pending release and cooldown.
func (s *Store) ForgetAddrs(addrs []netip.Addr) error {
	return s.setReleases(addrs, false)
}

func (s *Store) setReleases(addrs []netip.Addr, mark bool) error {
	if len(addrs) == 0 {
		return nil
	}
	return s.apply(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketReleases)
		for _, a := range addrs {
			k := []byte(a.String())
			var err error
			if mark {
				err = b.Put(k, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
			} else if err = b.Delete(k); err == nil {
				err = tx.Bucket(bucketCooldowns).Delete(k)
			}
			if err != nil {
				return fmt.Errorf("record release of %s: %w", a, err)
			}
		}
		return nil
	})
}

// Load reads the whole state.
func (s *Store) Load() (State, error) {
	st := State{Cooldowns: map[netip.Addr]time.Time{}}
	err := s.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketAllocations).ForEach(func(k, v []byte) error {
			a, err := decodeAllocation(v)
			if err != nil {
				return fmt.Errorf("allocation %q: %w", k, err)
			}
			st.Allocations = append(st.Allocations, a)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketCooldowns).ForEach(func(k, v []byte) error {
			a, err := netip.ParseAddr(string(k))
			if err != nil {
				return fmt.Errorf("cooldown key %q: %w", k, err)
			}
			until, err := time.Parse(time.RFC3339Nano, string(v))
			if err != nil {
				return fmt.Errorf("cooldown of %s: %w", a, err)
			}
			st.Cooldowns[a] = until
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketReleases).ForEach(func(k, _ []byte) error {
			a, err := netip.ParseAddr(string(k))
			if err != nil {
				return fmt.Errorf("pending release key %q: %w", k, err)
			}
			st.PendingReleases = append(st.PendingReleases, a)
			return nil
		})
	})
	if err != nil {
		return State{}, fmt.Errorf("load state: %w", err)
	}
	return st, nil
}
