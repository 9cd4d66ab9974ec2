package store

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
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
	// schemaVersion 3: the change log beside the file may hold changes the file lacks. A cns
	// that knows only schema 2 would ignore them, so it must refuse the file. Open writes 3;
	// a clean Close, the log applied and emptied, writes 2 back (schemaClosed), so a node
	// stopped cleanly can be rolled back to a cns without the log.
	schemaVersion = []byte("3")
	schemaClosed  = []byte("2")
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
	log     *wal
	logger  *slog.Logger
	reqs    chan commit
	stopped chan struct{}

	closeMu sync.RWMutex
	closed  bool
}

// RebuildFunc returns the allocations of a node whose state file was lost (cns reads them
// from the datapath). An error leaves the damaged file in place, so the next start tries again.
type RebuildFunc func() ([]Allocation, error)

// Open opens (creating if needed) the state file at path. A file that bbolt cannot read is
// rebuilt with no allocations; see OpenRebuilding.
func Open(path string, log *slog.Logger) (s *Store, movedAside string, err error) {
	return OpenRebuilding(path, log, nil)
}

// OpenRebuilding opens (creating if needed) the state file at path. A file it creates starts
// with what rebuild returns (the live pods of a node whose state file was lost). A file that
// bbolt cannot read is kept as path.corrupt-<time> (movedAside names it; the caller must say so loudly)
// and replaced by one holding what rebuild returns. The replacement is built beside the
// state file and renamed over it only when complete: until then the damaged file stays at
// path, so a crash, a full disk or a failed rebuild half-way is redone at the next start
// instead of leaving a valid-looking partial file that would be trusted. A change log damaged
// before its end is treated the same way (and kept beside it); a whole log is applied to the
// state file before Open returns.
func OpenRebuilding(path string, log *slog.Logger, rebuild RebuildFunc) (s *Store, movedAside string, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, "", fmt.Errorf("create state directory: %w", err)
	}
	lg, err := openLog(logPath(path), lockTimeout)
	if err != nil {
		return nil, "", err
	}
	defer func() {
		if err != nil {
			lg.close()
		}
	}()
	logged, logErr := lg.readBack(log)
	if logErr != nil && !errors.Is(logErr, errLogCorrupt) {
		return nil, "", fmt.Errorf("read change log: %w", logErr)
	}
	if _, statErr := os.Stat(path); errors.Is(statErr, os.ErrNotExist) && rebuild != nil {
		if err = startFromDatapath(path, log, rebuild); err != nil {
			return nil, "", err
		}
	}
	db, found, err := openChecked(path)
	if err != nil && !isCorrupt(err) {
		return nil, "", fmt.Errorf("open state %s: %w", path, err) // never discard state for an operational error
	}
	older := err == nil && (found == string(schemaClosed) || found == string(schemaV1))
	if older {
		// Closed cleanly with the log empty, or written since by a cns without the log (a
		// rollback): whatever the log holds, whole or damaged, is older than the file.
		if len(logged) > 0 || logErr != nil {
			log.Warn("ignoring the change log: the state file was written after it", "path", path, "schema", found,
				"changes", len(logged), "logErr", logErr)
		}
		logged, logErr = nil, nil
	}
	if err != nil || logErr != nil {
		if db != nil {
			db.Close()
		}
		if movedAside, err = rebuildCorrupt(path, log, rebuild, err, logErr); err != nil {
			return nil, "", err
		}
		if logErr != nil { // the rebuild replaces what the damaged log held
			logged = nil
			if err = lg.reset(); err != nil {
				return nil, "", err
			}
		}
		db, _, err = openChecked(path)
	}
	if err != nil {
		return nil, "", fmt.Errorf("open state %s: %w", path, err)
	}
	if err = syncDir(filepath.Dir(path)); err != nil { // the state file may be new too
		db.Close()
		return nil, "", err
	}
	// Every start begins a new generation of the log (a new salt), after applying what it held.
	lg.stale = true
	if err = checkpoint(db, lg, logged); err != nil {
		db.Close()
		return nil, "", fmt.Errorf("replay change log into %s: %w", path, err)
	}
	// Only now, the log applied and empty, may the file say a cns without the log must refuse it.
	if older {
		if err = markSchema(db, schemaVersion); err != nil {
			db.Close()
			return nil, "", fmt.Errorf("mark state %s: %w", path, err)
		}
	}
	s = &Store{db: db, log: lg, logger: log, reqs: make(chan commit, maxGroup), stopped: make(chan struct{})}
	go s.committer()
	return s, movedAside, nil
}

func logPath(statePath string) string { return statePath + ".wal" }

// startFromDatapath creates the missing state file at path holding what rebuild reads from
// the datapath. On a new node that is nothing; on a node whose state file was deleted or whose
// disk was replaced it is every live pod, whose addresses would otherwise look free on the NIC.
// The file appears complete or not at all (buildInPlace), so an interrupted start is redone.
func startFromDatapath(path string, log *slog.Logger, rebuild RebuildFunc) error {
	var n int
	err := buildInPlace(path, func() ([]Allocation, error) {
		allocs, err := rebuild()
		n = len(allocs)
		return allocs, err
	})
	if err != nil {
		return fmt.Errorf("no state file at %s: %w", path, err)
	}
	if n > 0 {
		log.Error("STATE REBUILT: there was no state file, but pods run on this node; their allocations were rebuilt from the datapath",
			"path", path, "recoveredAllocations", n)
	}
	return nil
}

// rebuildCorrupt replaces a state file that cannot be read, or whose change log is damaged
// before its end, by what rebuild returns. A damaged log is copied beside the damaged file
// first; the caller empties it only once the rebuilt file is in place, so a crash before that
// finds the damage again and rebuilds again.
func rebuildCorrupt(path string, log *slog.Logger, rebuild RebuildFunc, dbErr, logErr error) (movedAside string, err error) {
	log.Error("state unreadable, keeping a copy and rebuilding it", "path", path, "stateErr", dbErr, "logErr", logErr)
	stamp := time.Now().UTC().Format("20060102T150405.000000000Z")
	if logErr != nil {
		if err := copyFile(logPath(path), logPath(path)+".corrupt-"+stamp); err != nil {
			return "", fmt.Errorf("keep a copy of the damaged change log: %w", err)
		}
	}
	if movedAside, err = replaceCorrupt(path, stamp, rebuild); err != nil {
		return "", fmt.Errorf("rebuild state %s: %w", path, err)
	}
	return movedAside, nil
}

// openDB opens the file, creating its buckets; found is the schema it says (a new file is
// marked schemaVersion, and found is empty).
func openDB(path string) (db *bolt.DB, found string, err error) {
	// The freelist stays synced: without it bbolt rebuilds the freelist at open on a goroutine
	// of its own, where a damaged page panics beyond any recover (see openChecked).
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, "", err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketAllocations, bucketCooldowns, bucketReleases, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		v := meta.Get(keySchema)
		if v != nil && !slices.ContainsFunc([][]byte{schemaVersion, schemaClosed, schemaV1}, func(k []byte) bool { return bytes.Equal(k, v) }) {
			return fmt.Errorf("state schema %q, this cns reads %q", v, schemaVersion)
		}
		if found = string(v); v != nil {
			return nil // Open marks an older file schemaVersion once its log is dealt with
		}
		return meta.Put(keySchema, schemaVersion) // a new file is this cns's from the start
	})
	if err != nil {
		db.Close()
		return nil, "", err
	}
	return db, found, nil
}

// errCorrupt marks a file whose pages are damaged (bbolt faulted or its check failed).
var errCorrupt = errors.New("state file is corrupt")

// openChecked opens the file and reads every page before it is trusted. bbolt reads its
// file through mmap: a torn file whose meta pages survive faults (SIGBUS) when a cut-off
// page is touched, which would kill the process on every start. On a dedicated goroutine
// with SetPanicOnFault that fault is a panic, recovered here as corruption.
func openChecked(path string) (db *bolt.DB, found string, err error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		debug.SetPanicOnFault(true) // this goroutine only
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%w: %v", errCorrupt, r) // a half-opened db is abandoned, not closed
			}
		}()
		if db, found, err = openDB(path); err != nil {
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
	return db, found, err
}

// isCorrupt tells a damaged file from an operational failure (lock held, permissions, I/O),
// which must never cause the state to be discarded.
func isCorrupt(err error) bool {
	return errors.Is(err, errCorrupt) || errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) ||
		errors.Is(err, berrors.ErrVersionMismatch) || strings.HasPrefix(err.Error(), "file size too small")
}

// ErrClosed is returned by commits made after Close.
var ErrClosed = errors.New("state store is closed")

// Close stops the committer after queued commits finish and closes the file. Later calls
// return nil; later commits return ErrClosed.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	close(s.reqs)
	s.closeMu.Unlock()
	<-s.stopped
	return errors.Join(s.db.Close(), s.log.close())
}

func allocKey(k ipampool.Key) []byte { return []byte(k.ContainerID + "\x00" + k.IfName) }

// PutAllocation records that a.Owner holds a.Addr (and ends any cooldown record of it).
func (s *Store) PutAllocation(a Allocation) error {
	v, err := encodeAllocation(a)
	if err != nil {
		return fmt.Errorf("encode allocation: %w", err)
	}
	if err := s.apply(del(inCooldowns, []byte(a.Addr.String())), put(inAllocations, allocKey(a.Owner.Key), v)); err != nil {
		return fmt.Errorf("commit allocation of %s: %w", a.Addr, err)
	}
	return nil
}

// ReleaseAllocation removes k's allocation and, when until is set, records the address's
// cooldown deadline, in one commit.
func (s *Store) ReleaseAllocation(k ipampool.Key, addr netip.Addr, until time.Time) error {
	cool := del(inCooldowns, []byte(addr.String()))
	if !until.IsZero() {
		cool = put(inCooldowns, cool.key, []byte(until.UTC().Format(time.RFC3339Nano)))
	}
	if err := s.apply(del(inAllocations, allocKey(k)), cool); err != nil {
		return fmt.Errorf("commit release of %s: %w", addr, err)
	}
	return nil
}

// MarkPendingRelease records addresses about to be removed from the NIC, before the write.
func (s *Store) MarkPendingRelease(addrs []netip.Addr) error {
	now := []byte(time.Now().UTC().Format(time.RFC3339Nano))
	ops := make([]op, 0, len(addrs))
	for _, a := range addrs {
		ops = append(ops, put(inReleases, []byte(a.String()), now))
	}
	return s.commitReleases(ops)
}

// ForgetAddrs drops every record of addresses that left the pool (released from the NIC,
// or never removed after all): pending release and cooldown.
func (s *Store) ForgetAddrs(addrs []netip.Addr) error {
	ops := make([]op, 0, 2*len(addrs))
	for _, a := range addrs {
		k := []byte(a.String())
		ops = append(ops, del(inReleases, k), del(inCooldowns, k))
	}
	return s.commitReleases(ops)
}

func (s *Store) commitReleases(ops []op) error {
	if len(ops) == 0 {
		return nil
	}
	if err := s.apply(ops...); err != nil {
		return fmt.Errorf("record releases: %w", err)
	}
	return nil
}

// Load reads the whole state, with every change committed before the call.
func (s *Store) Load() (State, error) {
	if err := s.send(commit{checkpoint: true}); err != nil {
		return State{}, fmt.Errorf("load state: %w", err)
	}
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
