package store

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crashImage is what a crash leaves on disk: the state file and its change log, read while
// the store is open and idle (every acknowledged commit is in them).
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
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	var ends []int // log size after each commit: commits one at a time are one record each
	for i := 1; i <= 4; i++ {
		if err := s.PutAllocation(alloc(i)); err != nil {
			t.Fatal(err)
		}
		ends = append(ends, len(snapshot(t, path).log))
	}
	img := snapshot(t, path)
	s.Close()
	// Every byte around each record's start and end (its header, its last bytes), and a
	// stride through the rest: each restart costs a few fsyncs.
	var cuts []int
	for n := 0; n <= len(img.log); n++ {
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
		path := crashImage{db: img.db, log: img.log[:n]}.restore(t)
		r := open(t, path)
		// Open moves the whole records into the state file and leaves nothing of the torn rest.
		if fi, err := os.Stat(logPath(path)); err != nil {
			t.Fatal(err)
		} else if fi.Size() != 0 {
			r.Close()
			t.Fatalf("log cut at %d: %d bytes left after the restart, want none", n, fi.Size())
		}
		got := addrsOf(t, r)
		if len(got) != whole {
			r.Close()
			t.Fatalf("log cut at %d of %d bytes: %d allocations, want the %d whole records", n, len(img.log), len(got), whole)
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

// TestZerosAtTheEndAreATornRecord: a filesystem may extend the file before the data reaches
// it, so a crash can leave zeros after the last record or in place of its last pages. Both
// are the torn last record, not damage.
func TestZerosAtTheEndAreATornRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	s.PutAllocation(alloc(1))
	one := len(snapshot(t, path).log)
	s.PutAllocation(alloc(2))
	img := snapshot(t, path)
	s.Close()
	for name, lg := range map[string][]byte{
		"after the last record":      append(slices.Clone(img.log), make([]byte, 4096)...),
		"in the last record's place": append(slices.Clone(img.log[:one]), make([]byte, len(img.log)-one)...),
		"at the last record's end":   append(slices.Clone(img.log[:len(img.log)-5]), make([]byte, 5)...),
	} {
		r, moved, err := Open(crashImage{db: img.db, log: lg}.restore(t), slog.New(slog.DiscardHandler))
		if err != nil || moved != "" {
			t.Fatalf("zeros %s: open moved %q, %v; want them trimmed", name, moved, err)
		}
		if got := addrsOf(t, r); len(got) != 1 && (len(got) != 2 || name != "after the last record") {
			t.Fatalf("zeros %s: allocations %v", name, got)
		}
		r.Close()
	}
}

// TestLogDamagedBeforeItsEndIsRebuilt: a damaged record followed by others means acknowledged
// changes may be lost, so the state is rebuilt (as for a damaged state file) and the log kept.
func TestLogDamagedBeforeItsEndIsRebuilt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	s.PutAllocation(alloc(1))
	first := len(snapshot(t, path).log)
	s.PutAllocation(alloc(2))
	img := snapshot(t, path)
	s.Close()
	img.log[first/2] ^= 0xff // inside the first record's payload
	damaged := slices.Clone(img.log)
	path = img.restore(t)
	r, moved, err := OpenRebuilding(path, slog.New(slog.DiscardHandler), dump2([]Allocation{alloc(7)}))
	if err != nil || moved == "" {
		t.Fatalf("open: moved %q, %v; want a rebuild", moved, err)
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
}

// TestReplayOverACheckpointedStateIsHarmless: a crash after a checkpoint's transaction and
// before the log is emptied leaves both holding the same changes; replaying them again ends
// in the same state, whatever the order of puts and deletes was.
func TestReplayOverACheckpointedStateIsHarmless(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	defer s.Close()
	s.PutAllocation(alloc(1))
	s.PutAllocation(alloc(2))
	s.ReleaseAllocation(alloc(1).Owner.Key, alloc(1).Addr, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	s.PutAllocation(Allocation{Addr: alloc(1).Addr, Owner: alloc(3).Owner}) // reuses 1, ends its cooldown
	s.MarkPendingRelease([]netip.Addr{alloc(9).Addr})
	s.ForgetAddrs([]netip.Addr{alloc(9).Addr})
	logged := snapshot(t, path).log
	want, err := s.Load() // checkpoints
	if err != nil {
		t.Fatal(err)
	}
	img := snapshot(t, path)
	if len(img.log) != 0 {
		t.Fatalf("log holds %d bytes after a checkpoint", len(img.log))
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
	var peak int64
	for i := range 2 * checkpointBytes / 4000 {
		a.Addr = netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		a.Owner.ContainerID = a.Addr.String()
		if err := s.PutAllocation(a); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(logPath(path))
		if err != nil {
			t.Fatal(err)
		}
		peak = max(peak, fi.Size())
	}
	s.Close()
	if peak > checkpointBytes+8192 {
		t.Fatalf("log grew to %d bytes, want a checkpoint at %d", peak, checkpointBytes)
	}
	if got := addrsOf(t, open(t, path)); len(got) != 2*checkpointBytes/4000 {
		t.Fatalf("%d allocations after restart", len(got))
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
			s.PutAllocation(alloc(1))
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
