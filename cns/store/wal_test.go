package store

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// crashImage is what a crash leaves on disk: the state file and its change log, read while
// the store is open and idle (every acknowledged commit is in them). A commit that took the
// log to checkpointBytes is answered before its checkpoint runs: the store is idle again only
// once a later commit has been answered.
type crashImage struct{ db, log []byte }

func snapshot(t *testing.T, path string) crashImage {
	t.Helper()
	db, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lg, err := os.ReadFile(logPath(path))
	if err != nil {
		t.Fatal(err)
	}
	return crashImage{db: db, log: lg}
}

// restore writes img to a fresh directory and returns the state file's path.
func (img crashImage) restore(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(path, img.db, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logPath(path), img.log, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// mustPut commits allocations one at a time (one log record each).
func mustPut(t *testing.T, s *Store, allocs ...Allocation) {
	t.Helper()
	for _, a := range allocs {
		if err := s.PutAllocation(a); err != nil {
			t.Fatal(err)
		}
	}
}

// loggedImage commits allocations one at a time (one record each) to a new store and returns
// what a crash right after them would leave, and where in the log each record ends.
func loggedImage(t *testing.T, allocs ...Allocation) (img crashImage, ends []int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	defer s.Close()
	for _, a := range allocs {
		mustPut(t, s, a)
		ends = append(ends, used(snapshot(t, path).log))
	}
	return snapshot(t, path), ends
}

// used is how much of a log is header and records: the zeros after them are the file's space.
// (A record of these tests never ends in a zero byte: its value is JSON.)
func used(log []byte) int {
	return max(zeroTail(log), min(len(log), logHeader)) // the salt may end in a zero byte
}

func addrsOf(t *testing.T, s *Store) []netip.Addr {
	t.Helper()
	st, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	var got []netip.Addr
	for _, a := range st.Allocations {
		got = append(got, a.Addr)
	}
	slices.SortFunc(got, netip.Addr.Compare)
	return got
}

// TestCommitsAreDurableInTheLogAlone: an acknowledged commit is in the log before any
// checkpoint, so a crash right after it loses nothing (the state file has none of them).
func TestCommitsAreDurableInTheLogAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	defer s.Close()
	for i := 1; i <= 3; i++ {
		if err := s.PutAllocation(alloc(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ReleaseAllocation(alloc(2).Owner.Key, alloc(2).Addr, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	img := snapshot(t, path)
	fileOnly := open(t, crashImage{db: img.db}.restore(t))
	if got := addrsOf(t, fileOnly); len(got) != 0 {
		t.Fatalf("the state file alone holds %v: the commits were checkpointed, not left to the log", got)
	}
	fileOnly.Close()
	r := open(t, img.restore(t))
	defer r.Close()
	if got, want := addrsOf(t, r), []netip.Addr{alloc(1).Addr, alloc(3).Addr}; !slices.Equal(got, want) {
		t.Fatalf("after a crash: allocations %v, want %v", got, want)
	}
	if st, _ := r.Load(); len(st.Cooldowns) != 1 {
		t.Fatalf("after a crash: cooldowns %v, want the released address's", st.Cooldowns)
	}
}

// TestTornLogAtEveryLengthKeepsExactlyTheWholeRecords cuts the log at every byte, as a crash
// during a write can: the state read back is that of the whole records before the cut, the
// torn rest is trimmed, and commits after the restart read back after another restart.
func TestTornLogAtEveryLengthKeepsExactlyTheWholeRecords(t *testing.T) {
	img, ends := loggedImage(t, alloc(1), alloc(2), alloc(3), alloc(4))
	// Every byte around each record's start and end (its header, its last bytes), and a
	// stride through the rest: each restart costs a few fsyncs.
	var cuts []int
	for n := 0; n <= used(img.log); n++ {
		near := n%23 == 0
		for _, e := range append([]int{0}, ends...) {
			near = near || (n >= e-2 && n <= e+recordHeader+2)
		}
		if near {
			cuts = append(cuts, n)
		}
	}
	for _, n := range cuts {
		whole := 0
		for _, e := range ends {
			if e <= n {
				whole++
			}
		}
		// Cut there, as a log written by a cns before the log kept its space, or zeros from
		// there on, as the space a reset leaves (after a header it made durable first).
		log := img.log[:n]
		if n%2 == 1 && n > logHeader {
			log = append(slices.Clone(log), make([]byte, len(img.log)-n)...)
		}
		path := crashImage{db: img.db, log: log}.restore(t)
		r := open(t, path)
		// Open moves the whole records into the state file and leaves nothing of the torn rest.
		if b, err := os.ReadFile(logPath(path)); err != nil {
			t.Fatal(err)
		} else if used(b) != logHeader {
			r.Close()
			t.Fatalf("log cut at %d: %d bytes left after the restart, want its header alone", n, used(b))
		}
		got := addrsOf(t, r)
		if len(got) != whole {
			r.Close()
			t.Fatalf("log cut at %d of %d bytes: %d allocations, want the %d whole records", n, used(img.log), len(got), whole)
		}
		// A commit shorter than any record: it must not be followed by the torn rest.
		if err := r.ReleaseAllocation(alloc(1).Owner.Key, alloc(1).Addr, time.Time{}); err != nil {
			t.Fatal(err)
		}
		r.Close()
		r = open(t, path)
		if got := addrsOf(t, r); len(got) != max(whole-1, 0) {
			t.Fatalf("log cut at %d: %d allocations after a release and a restart, want %d", n, len(got), max(whole-1, 0))
		}
		r.Close()
	}
}

// TestATornLastRecordIsDropped: a filesystem may extend the file before the data reaches it
// and write a record's pages in any order, so a crash can leave zeros after the last record,
// in its place, at its end, or in its header with its payload on disk. Each is the torn last
// record (never acknowledged), not damage: the state keeps every record before it.
func TestATornLastRecordIsDropped(t *testing.T) {
	img, ends := loggedImage(t, alloc(1), alloc(2), alloc(3))
	last, end := ends[1], ends[2]
	zero := func(from, to int) []byte {
		lg := slices.Clone(img.log)
		clear(lg[from:to])
		return lg
	}
	for name, tc := range map[string]struct {
		log  []byte
		want int
	}{
		"zeros after it":           {append(slices.Clone(img.log), make([]byte, 4096)...), 3},
		"the space cut off":        {img.log[:end], 3},
		"zeros in its place":       {zero(last, end), 2},
		"zeros at its end":         {zero(end-5, end), 2},
		"its length never written": {zero(last, last+2), 2},
		"its header never written": {zero(last, last+recordHeader), 2},
		"cut inside its header":    {img.log[:last+3], 2},
	} {
		r, moved, err := Open(crashImage{db: img.db, log: tc.log}.restore(t), slog.New(slog.DiscardHandler))
		if err != nil || moved != "" {
			t.Fatalf("%s: open moved %q, %v; want the torn record dropped", name, moved, err)
		}
		if got := addrsOf(t, r); len(got) != tc.want {
			t.Fatalf("%s: allocations %v, want %d", name, got, tc.want)
		}
		r.Close()
	}
}

// TestLogDamagedBeforeItsEndIsRebuilt: a bad record with a whole one after it means
// acknowledged changes may be lost (a crash tears only the last record), so the state is
// rebuilt, as for a damaged state file, and the damaged log is kept beside it.
func TestLogDamagedBeforeItsEndIsRebuilt(t *testing.T) {
	img, ends := loggedImage(t, alloc(1), alloc(2), alloc(3))
	for name, at := range map[string]int{
		"payload":           (logHeader + ends[0]) / 2,
		"length, too long":  logHeader + 3,   // the first record's length now runs past the end
		"length, too short": ends[0],         // the second record's length shrinks by one
		"checksum":          ends[1] + 4 + 1, // the third record's checksum
		"header":            0,               // zeroed, with the records behind it
	} {
		t.Run(name, func(t *testing.T) {
			damaged := slices.Clone(img.log)
			switch name {
			case "header":
				clear(damaged[:logHeader])
			case "length, too short":
				damaged[at]--
			default:
				damaged[at] ^= 0x40
			}
			if name == "checksum" { // a bad last record is the torn one; damage one with a record after it
				damaged = append(damaged, img.log[ends[0]:ends[1]]...)
			}
			path := crashImage{db: img.db, log: damaged}.restore(t)
			r, moved, err := OpenRebuilding(path, slog.New(slog.DiscardHandler), dump2([]Allocation{alloc(7)}))
			if err != nil || moved == "" {
				t.Fatalf("open: moved %q, %v; want a rebuild", moved, err)
			}
			if b, err := os.ReadFile(logPath(path)); err != nil || used(b) != logHeader {
				r.Close()
				t.Fatalf("log after the rebuild: %d bytes before its zeros (%v), want its header alone", used(b), err)
			}
			if got := addrsOf(t, r); !slices.Equal(got, []netip.Addr{alloc(7).Addr}) {
				t.Fatalf("allocations %v, want the rebuilt one", got)
			}
			r.Close()
			kept, _ := filepath.Glob(logPath(path) + ".corrupt-*")
			if len(kept) != 1 {
				t.Fatalf("kept logs %v, want one", kept)
			}
			if b, _ := os.ReadFile(kept[0]); !bytes.Equal(b, damaged) {
				t.Fatal("the kept log is not the damaged one")
			}
			r = open(t, path) // the rebuild emptied the log: the next start trusts the state
			defer r.Close()
			if got := addrsOf(t, r); len(got) != 1 {
				t.Fatalf("after the next start: %v", got)
			}
		})
	}
}

// TestReplayOverACheckpointedStateIsHarmless: a crash after a checkpoint's transaction and
// before the log is emptied leaves both holding the same changes; replaying them again ends
// in the same state, whatever the order of puts and deletes was.
func TestReplayOverACheckpointedStateIsHarmless(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	defer s.Close()
	mustPut(t, s, alloc(1), alloc(2))
	if err := errors.Join(
		s.ReleaseAllocation(alloc(1).Owner.Key, alloc(1).Addr, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)),
		s.PutAllocation(Allocation{Addr: alloc(1).Addr, Owner: alloc(3).Owner}), // reuses 1, ends its cooldown
		s.MarkPendingRelease([]netip.Addr{alloc(9).Addr}),
		s.ForgetAddrs([]netip.Addr{alloc(9).Addr}),
	); err != nil {
		t.Fatal(err)
	}
	logged := snapshot(t, path).log
	want, err := s.Load() // checkpoints
	if err != nil {
		t.Fatal(err)
	}
	img := snapshot(t, path)
	if used(img.log) != logHeader {
		t.Fatalf("log holds %d bytes after a checkpoint", used(img.log))
	}
	img.log = logged
	r := open(t, img.restore(t))
	defer r.Close()
	got, err := r.Load()
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got.Allocations, func(a, b Allocation) int { return a.Addr.Compare(b.Addr) })
	slices.SortFunc(want.Allocations, func(a, b Allocation) int { return a.Addr.Compare(b.Addr) })
	if len(got.Allocations) != 2 || len(got.Cooldowns) != 0 || len(got.PendingReleases) != 0 ||
		!slices.Equal(got.Allocations, want.Allocations) {
		t.Fatalf("replayed twice: %+v, want %+v", got, want)
	}
}

// TestTheLogIsCheckpointedAsItGrows: the committer moves the log into the state file at
// checkpointBytes, so a busy node's log (and its replay at start) stays bounded.
func TestTheLogIsCheckpointedAsItGrows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	a := alloc(1)
	a.Owner.PodName = strings.Repeat("p", 4000)
	f, err := os.Open(logPath(path))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	past := make([]byte, 8192) // where a record lands if the log outgrows checkpointBytes by two records
	for i := range 2 * checkpointBytes / 4000 {
		a.Addr = netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		a.Owner.ContainerID = a.Addr.String()
		if err := s.PutAllocation(a); err != nil {
			t.Fatal(err)
		}
		if _, err := f.ReadAt(past, checkpointBytes+8192); err != nil {
			t.Fatal(err)
		}
		if !allZero(past) {
			t.Fatalf("log grew past %d bytes after %d records, want a checkpoint at %d", checkpointBytes+8192, i+1, checkpointBytes)
		}
	}
	s.Close()
	r := open(t, path)
	defer r.Close()
	if got := addrsOf(t, r); len(got) != 2*checkpointBytes/4000 {
		t.Fatalf("%d allocations after restart", len(got))
	}
}

// TestACommitDoesNotWaitForTheCheckpointItTrips: the commit whose record takes the log to
// checkpointBytes is durable once that record is synced, and is answered then; the checkpoint
// after it (held here: the test keeps bbolt's write transaction open) delays only the commits
// queued behind it. On this machine's disk a checkpoint took 15–60 ms against 0.2 ms for a
// lone commit, and an ADD that tripped one waited that long.
func TestACommitDoesNotWaitForTheCheckpointItTrips(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	defer s.Close()
	a := alloc(1)
	a.Owner.PodName = strings.Repeat("p", 4000)
	put := func(i int) error { // every record the same size: fixed-width address and key
		a.Addr = netip.AddrFrom4([4]byte{10, 1, byte(100 + i/100), byte(100 + i%100)})
		a.Owner.ContainerID = a.Addr.String()
		return s.PutAllocation(a)
	}
	// Fill the log to one record short of a checkpoint, one commit (one record) at a time;
	// s.log is read only between commits, with no checkpoint running.
	n, grew := 0, int64(0)
	for {
		before := s.log.size
		if err := put(n); err != nil {
			t.Fatal(err)
		}
		n++
		if g := s.log.size - before; grew != 0 && g != grew {
			t.Fatalf("records of %d and %d bytes: the test needs them all the same size", grew, g)
		} else {
			grew = g
		}
		if s.log.size+grew >= checkpointBytes {
			break
		}
	}
	tx, err := s.db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }() // before Close, whose checkpoint would wait on it
	done := make(chan error, 1)
	go func() { done <- put(n) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the commit that took the log to %d bytes was not answered while its checkpoint waited on bbolt", checkpointBytes)
	}
	n++
	_ = tx.Rollback() // the checkpoint runs now; the next commit waits for it
	if err := put(n); err != nil {
		t.Fatal(err)
	}
	n++
	if got, want := s.log.size, int64(logHeader)+grew; got != want {
		t.Fatalf("log of %d bytes after the checkpoint and one record, want %d", got, want)
	}
	s.Close()
	r := open(t, path)
	defer r.Close()
	if got := addrsOf(t, r); len(got) != n {
		t.Fatalf("%d allocations after restart, want %d", len(got), n)
	}
}

// TestAFailedLogWriteIsCutBack: a failed write fails every commit of its group and leaves
// nothing of it in the log, whether the disk cut it short or took it whole and then failed
// (as a failed fdatasync does): after a crash the state is exactly what was acknowledged,
// and later commits are never read behind a partial record.
func TestAFailedLogWriteIsCutBack(t *testing.T) {
	for name, fail := range map[string]func(f *os.File, b []byte, off int64) (int, error){
		"cut short": func(f *os.File, b []byte, off int64) (int, error) {
			n, _ := f.WriteAt(b[:len(b)/2], off)
			return n, syscall.ENOSPC
		},
		"written, then failed": func(f *os.File, b []byte, off int64) (int, error) {
			n, _ := f.WriteAt(b, off)
			return n, syscall.EIO
		},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			s := open(t, path)
			defer s.Close()
			mustPut(t, s, alloc(1))
			writeLog = fail
			t.Cleanup(func() { writeLog = (*os.File).WriteAt })
			big := alloc(2)
			big.Owner.PodName = strings.Repeat("p", 2000) // outlasts the next, shorter record
			if err := s.PutAllocation(big); err == nil {
				t.Fatal("a commit whose write failed was acknowledged")
			}
			writeLog = (*os.File).WriteAt
			crashed := snapshot(t, path)
			if err := s.ReleaseAllocation(alloc(1).Owner.Key, alloc(1).Addr, time.Time{}); err != nil {
				t.Fatal(err)
			}
			for when, img := range map[string]crashImage{"right after the failure": crashed, "after the next commit": snapshot(t, path)} {
				r, moved, err := Open(img.restore(t), slog.New(slog.DiscardHandler))
				if err != nil || moved != "" {
					t.Fatalf("crash %s: open moved %q, %v", when, moved, err)
				}
				want := map[bool][]netip.Addr{true: {alloc(1).Addr}, false: nil}[when == "right after the failure"]
				if got := addrsOf(t, r); !slices.Equal(got, want) {
					t.Fatalf("crash %s: allocations %v, want %v (the failed commit absent)", when, got, want)
				}
				r.Close()
			}
		})
	}
}

// TestALogThatCannotBeCutBackRefusesCommits: when the failed write cannot be cut back
// either, no record may follow the bytes it left: every commit fails until the cut succeeds.
func TestALogThatCannotBeCutBackRefusesCommits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	defer s.Close()
	mustPut(t, s, alloc(1))
	t.Cleanup(func() { writeLog, truncateLog = (*os.File).WriteAt, (*os.File).Truncate })
	writeLog = func(f *os.File, b []byte, off int64) (int, error) {
		n, _ := f.WriteAt(b, off)
		return n, syscall.EIO // written whole, then failed: a valid record that was not acknowledged
	}
	truncateLog = func(*os.File, int64) error { return syscall.EIO }
	if err := s.PutAllocation(alloc(2)); err == nil {
		t.Fatal("a commit whose write failed was acknowledged")
	}
	writeLog = (*os.File).WriteAt
	if err := s.PutAllocation(alloc(3)); err == nil {
		t.Fatal("a commit was acknowledged behind the failed record that could not be cut back")
	}
	truncateLog = (*os.File).Truncate
	mustPut(t, s, alloc(4))
	r := open(t, snapshot(t, path).restore(t))
	defer r.Close()
	if got, want := addrsOf(t, r), []netip.Addr{alloc(1).Addr, alloc(4).Addr}; !slices.Equal(got, want) {
		t.Fatalf("after a crash: %v, want %v", got, want)
	}
}

// TestACleanCloseLeavesAFileACNSWithoutTheLogReads: while cns runs (or after it crashed) the
// file says schema 3, which a cns that knows only schema 2 refuses rather than ignore the log;
// a clean close applies the log and writes 2 back, so a stopped node can be rolled back.
func TestACleanCloseLeavesAFileACNSWithoutTheLogReads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	mustPut(t, s, alloc(1))
	running := snapshot(t, path)
	s.Close()
	for when, tc := range map[string]struct {
		path string
		want string
	}{
		"running": {running.restore(t), "3"},
		"closed":  {path, "2"},
	} {
		db, err := bolt.Open(tc.path, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		var schema string
		db.View(func(tx *bolt.Tx) error {
			schema = string(tx.Bucket(bucketMeta).Get(keySchema))
			if when == "closed" && tx.Bucket(bucketAllocations).Stats().KeyN != 1 {
				t.Errorf("closed: the file lacks the logged allocation")
			}
			return nil
		})
		db.Close()
		if schema != tc.want {
			t.Errorf("%s: schema %q, want %q", when, schema, tc.want)
		}
	}
	if fi, err := os.Stat(logPath(path)); err != nil || fi.Size() != logHeader {
		t.Fatalf("log after a clean close: %v %v, want its header alone", fi, err)
	}
}

// TestAChangeBboltWouldRefuseFailsAlone: a change the checkpoint could never apply fails its
// own commit; it never reaches the log, where it would fail every checkpoint and start.
func TestAChangeBboltWouldRefuseFailsAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	a := alloc(1)
	a.Owner.ContainerID = strings.Repeat("c", 40000) // key beyond bbolt's MaxKeySize
	if err := s.PutAllocation(a); err == nil {
		t.Fatal("an allocation whose key bbolt refuses was committed")
	}
	if err := s.PutAllocation(alloc(2)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	r := open(t, path)
	defer r.Close()
	if got := addrsOf(t, r); len(got) != 1 {
		t.Fatalf("allocations %v, want alloc 2", got)
	}
}

// setSchema rewrites the schema of the state file at path, as another cns would have left it,
// and runs change on its buckets.
func setSchema(t *testing.T, path, schema string, change func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketMeta).Put(keySchema, []byte(schema)); err != nil {
			return err
		}
		return change(tx)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestALogOlderThanTheFileIsNotReplayed: a file that says schema 2 was closed cleanly with
// the log empty, or written since by a cns without the log (a rollback). A log left beside it,
// whole or damaged, is older than the file: replaying it would bring back what that cns
// changed (here an address it gave to another pod), and its damage is no reason to rebuild.
// A start that fails before the file is marked 3 leaves it 2, so the next start ignores the
// log too.
func TestALogOlderThanTheFileIsNotReplayed(t *testing.T) {
	img, ends := loggedImage(t, alloc(1), alloc(2))
	other := Allocation{Addr: alloc(1).Addr, Owner: alloc(5).Owner}
	v, err := encodeAllocation(other)
	if err != nil {
		t.Fatal(err)
	}
	damaged := slices.Clone(img.log)
	damaged[ends[0]/2] ^= 0xff
	for name, lg := range map[string][]byte{"whole": img.log, "damaged": damaged, "after a failed start": img.log} {
		t.Run(name, func(t *testing.T) {
			path := crashImage{db: img.db, log: lg}.restore(t)
			setSchema(t, path, "2", func(tx *bolt.Tx) error {
				if err := tx.Bucket(bucketAllocations).Delete(allocKey(alloc(2).Owner.Key)); err != nil {
					return err
				}
				return tx.Bucket(bucketAllocations).Put(allocKey(other.Owner.Key), v)
			})
			if name == "after a failed start" {
				writeLog = func(*os.File, []byte, int64) (int, error) { return 0, syscall.EIO }
				if r, _, err := Open(path, slog.New(slog.DiscardHandler)); err == nil {
					r.Close()
					t.Fatal("open with a log that cannot be written succeeded")
				}
				writeLog = (*os.File).WriteAt
			}
			r, moved, err := Open(path, slog.New(slog.DiscardHandler))
			if err != nil || moved != "" {
				t.Fatalf("open: moved %q, %v; want the log ignored", moved, err)
			}
			defer r.Close()
			st, err := r.Load()
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Allocations) != 1 || st.Allocations[0].Owner.Key != other.Owner.Key {
				t.Fatalf("allocations %+v, want only the one the later cns made", st.Allocations)
			}
		})
	}
	t.Cleanup(func() { writeLog = (*os.File).WriteAt })
}

// TestCloseSaysSchema2OnlyWithTheLogEmpty: when the log cannot be emptied at Close, the file
// keeps schema 3, so a cns without the log refuses it instead of losing what the log holds.
func TestCloseSaysSchema2OnlyWithTheLogEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	mustPut(t, s, alloc(1))
	writeLog = func(*os.File, []byte, int64) (int, error) { return 0, syscall.EIO } // the new header
	t.Cleanup(func() { writeLog = (*os.File).WriteAt })
	s.Close()
	writeLog = (*os.File).WriteAt
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.View(func(tx *bolt.Tx) error {
		if got := string(tx.Bucket(bucketMeta).Get(keySchema)); got != "3" {
			t.Errorf("schema %q after a close that could not empty the log, want 3", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestNothingIsCutBeforeTheStateIsAccepted: a log of another format, or a torn log beside a
// file this cns refuses (a newer schema), is left byte for byte as it was: the cns that wrote
// it may still need it.
func TestNothingIsCutBeforeTheStateIsAccepted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	mustPut(t, s, alloc(1), alloc(2))
	img := snapshot(t, path)
	s.Close()
	for name, tc := range map[string]struct {
		log    []byte
		schema string
	}{
		"another format": {append([]byte("vcl9"), img.log[4:]...), "3"},
		"newer schema":   {img.log[:used(img.log)-3], "4"},
	} {
		path := crashImage{db: img.db, log: tc.log}.restore(t)
		setSchema(t, path, tc.schema, func(*bolt.Tx) error { return nil })
		if r, moved, err := Open(path, slog.New(slog.DiscardHandler)); err == nil || moved != "" {
			if r != nil {
				r.Close()
			}
			t.Fatalf("%s: open moved %q, %v; want a refusal", name, moved, err)
		}
		if b, err := os.ReadFile(logPath(path)); err != nil || !bytes.Equal(b, tc.log) {
			t.Fatalf("%s: the log was changed (%d bytes, had %d)", name, len(b), len(tc.log))
		}
	}
}

// TestRecordsOfAnEarlierGenerationAreNotReplayed: after a checkpoint the log starts again; a
// crash can expose the earlier generation's bytes behind the new records (blocks reused, the
// size written before the data, as ext4 without a journal allows). Here the new record ends
// where an earlier one began, a release of the very allocation the new record makes: replayed,
// it would lose an acknowledged allocation.
func TestRecordsOfAnEarlierGenerationAreNotReplayed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	defer s.Close()
	mustPut(t, s, alloc(2))
	if err := s.ReleaseAllocation(alloc(2).Owner.Key, alloc(2).Addr, time.Time{}); err != nil {
		t.Fatal(err)
	}
	earlier := snapshot(t, path).log
	if _, err := s.Load(); err != nil { // checkpoints: the log starts again
		t.Fatal(err)
	}
	mustPut(t, s, alloc(2)) // the same record as the earlier first one, under another salt
	img := snapshot(t, path)
	n := used(img.log)
	if n >= used(earlier) {
		t.Fatalf("test setup: the new log (%d bytes) must be shorter than the earlier one (%d)", n, used(earlier))
	}
	img.log = append(img.log[:n], earlier[n:]...) // the earlier release behind the new record
	r, moved, err := Open(img.restore(t), slog.New(slog.DiscardHandler))
	if err != nil || moved != "" {
		t.Fatalf("open: moved %q, %v; want the earlier bytes taken for a torn record", moved, err)
	}
	defer r.Close()
	if got := addrsOf(t, r); !slices.Equal(got, []netip.Addr{alloc(2).Addr}) {
		t.Fatalf("allocations %v, want %v: a record of the earlier generation was replayed", got, alloc(2).Addr)
	}
}

// TestAFailedWriteStartsANewGeneration: the failed record may reach the disk whole; the next
// one is not written in its place under the same salt, where a crash could expose it.
func TestAFailedWriteStartsANewGeneration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	defer s.Close()
	mustPut(t, s, alloc(1))
	salt := func() []byte { return snapshot(t, path).log[4:logHeader] }
	before := salt()
	writeLog = func(f *os.File, b []byte, off int64) (int, error) {
		n, _ := f.WriteAt(b, off)
		return n, syscall.EIO
	}
	t.Cleanup(func() { writeLog = (*os.File).WriteAt })
	if err := s.PutAllocation(alloc(2)); err == nil {
		t.Fatal("a commit whose write failed was acknowledged")
	}
	writeLog = (*os.File).WriteAt
	mustPut(t, s, alloc(3))
	if bytes.Equal(salt(), before) {
		t.Fatal("the record after a failed write was written under the same salt")
	}
	r := open(t, snapshot(t, path).restore(t))
	defer r.Close()
	if got, want := addrsOf(t, r), []netip.Addr{alloc(1).Addr, alloc(3).Addr}; !slices.Equal(got, want) {
		t.Fatalf("after a crash: %v, want %v", got, want)
	}
}

// TestTheLogKeepsItsSizeWhileItTakesRecords: records overwrite the zeros a reset left, so a
// commit never changes the file's size (its fdatasync then writes no inode), and what a crash
// leaves reads back whole.
func TestTheLogKeepsItsSizeWhileItTakesRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	defer s.Close()
	size := func() int64 {
		t.Helper()
		fi, err := os.Stat(logPath(path))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	if got := size(); got != logSpace {
		t.Fatalf("log of %d bytes after open, want %d", got, logSpace)
	}
	mustPut(t, s, alloc(1), alloc(2), alloc(3))
	if err := s.ReleaseAllocation(alloc(2).Owner.Key, alloc(2).Addr, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if got := size(); got != logSpace {
		t.Fatalf("log of %d bytes after four commits, want %d", got, logSpace)
	}
	r := open(t, snapshot(t, path).restore(t))
	defer r.Close()
	if got, want := addrsOf(t, r), []netip.Addr{alloc(1).Addr, alloc(3).Addr}; !slices.Equal(got, want) {
		t.Fatalf("after a crash: %v, want %v", got, want)
	}
	if _, err := s.Load(); err != nil { // checkpoints: zeros over the records
		t.Fatal(err)
	}
	if b := snapshot(t, path).log; len(b) != logSpace || used(b) != logHeader {
		t.Fatalf("log after a checkpoint: %d bytes, %d before its zeros; want %d, its header alone", len(b), used(b), logSpace)
	}
}

// TestALogGrownPastItsSpaceComesBackToIt: a log that grew past logSpace (checkpoints that
// failed for a while) is cut back to it once its records are in the state file.
func TestALogGrownPastItsSpaceComesBackToIt(t *testing.T) {
	img, ends := loggedImage(t, alloc(1), alloc(2))
	img.log = append(img.log[:ends[1]:ends[1]], make([]byte, logSpace+logSpace/2)...)
	path := img.restore(t)
	r := open(t, path)
	defer r.Close()
	if got := addrsOf(t, r); len(got) != 2 {
		t.Fatalf("allocations %v, want both", got)
	}
	if fi, err := os.Stat(logPath(path)); err != nil || fi.Size() != logSpace {
		t.Fatalf("log after a start: %v %v, want %d bytes", fi, err, logSpace)
	}
}

// TestALogTheDiskCannotExtendGrowsAsItGoes: on a disk too full for the log's space, a start
// and its commits go on with a shorter log.
func TestALogTheDiskCannotExtendGrowsAsItGoes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	t.Cleanup(func() { writeLog = (*os.File).WriteAt })
	writeLog = func(f *os.File, b []byte, off int64) (int, error) {
		if off >= 4*int64(len(zeros)) && allZero(b) {
			return 0, syscall.ENOSPC // the space past 256 KiB
		}
		return f.WriteAt(b, off)
	}
	s := open(t, path)
	defer s.Close()
	mustPut(t, s, alloc(1), alloc(2))
	if fi, err := os.Stat(logPath(path)); err != nil || fi.Size() != logHeader+4*int64(len(zeros)) {
		t.Fatalf("log: %v %v, want the %d bytes the disk took", fi, err, logHeader+4*len(zeros))
	}
	writeLog = (*os.File).WriteAt
	r := open(t, snapshot(t, path).restore(t))
	defer r.Close()
	if got := addrsOf(t, r); len(got) != 2 {
		t.Fatalf("after a crash: %v, want both allocations", got)
	}
}

// TestTheLogsSpaceIsNotATornRecord: the zeros after the last record are the log's space, not
// a record a crash cut short: a start says nothing of them and keeps every record.
func TestTheLogsSpaceIsNotATornRecord(t *testing.T) {
	img, ends := loggedImage(t, alloc(1), alloc(2))
	img.log = append(img.log[:ends[1]:ends[1]], make([]byte, logSpace-ends[1])...)
	var logged bytes.Buffer
	r, moved, err := Open(img.restore(t), slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil || moved != "" {
		t.Fatalf("open: moved %q, %v", moved, err)
	}
	defer r.Close()
	if got := addrsOf(t, r); len(got) != 2 {
		t.Fatalf("allocations %v, want both", got)
	}
	if strings.Contains(logged.String(), "torn") {
		t.Fatalf("a start called the log's space a torn record: %s", logged.String())
	}
}

// TestAResetThatCannotZeroTheLogCutsItOff: when the zeros cannot be written over the records
// a checkpoint applied, the next commit cuts the log to its new header before its record, and
// nothing of the earlier generation is read behind it.
func TestAResetThatCannotZeroTheLogCutsItOff(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	defer s.Close()
	mustPut(t, s, alloc(1), alloc(2))
	t.Cleanup(func() { writeLog = (*os.File).WriteAt })
	writeLog = func(f *os.File, b []byte, off int64) (int, error) {
		if off >= logHeader && allZero(b) {
			return 0, syscall.ENOSPC // the zeros
		}
		return f.WriteAt(b, off)
	}
	if _, err := s.Load(); err == nil { // checkpoints, then resets the log
		t.Fatal("a load whose reset failed succeeded")
	}
	writeLog = (*os.File).WriteAt
	if err := s.ReleaseAllocation(alloc(1).Owner.Key, alloc(1).Addr, time.Time{}); err != nil {
		t.Fatal(err)
	}
	img := snapshot(t, path)
	if n := used(img.log); n > logHeader+200 {
		t.Fatalf("log holds %d bytes before its zeros after one small record: the earlier records were kept", n)
	}
	r := open(t, img.restore(t))
	defer r.Close()
	if got, want := addrsOf(t, r), []netip.Addr{alloc(2).Addr}; !slices.Equal(got, want) {
		t.Fatalf("after a crash: %v, want %v", got, want)
	}
}
