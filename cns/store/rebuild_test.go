package store

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"
)

func writeGarbage(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("not a bbolt file: the disk returned rubbish for the first page"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// An interrupted rebuild (failed datapath dump, crash or full disk at any step) must leave
// nothing the next start trusts: that start finds the damage again and rebuilds in full.
func TestInterruptedRebuildIsRedoneAtNextStart(t *testing.T) {
	want := []Allocation{alloc(1), alloc(2), alloc(3)}
	for _, damaged := range []string{"state file", "change log"} {
		for _, step := range []string{"dump", stepCopied, stepCreated, stepWritten, stepSynced} {
			t.Run(damaged+"/"+step, func(t *testing.T) { interruptRebuild(t, damaged, step, want) })
		}
	}
}

func interruptRebuild(t *testing.T, damaged, step string, want []Allocation) {
	path := filepath.Join(t.TempDir(), "state.db")
	if damaged == "state file" {
		writeGarbage(t, path)
	} else {
		damageLog(t, path)
	}
	injected := errors.New("injected at " + step)
	rebuildFault = func(s string) error {
		if s == step {
			return injected
		}
		return nil
	}
	t.Cleanup(func() { rebuildFault = func(string) error { return nil } })
	dump := func() ([]Allocation, error) {
		if step == "dump" {
			return want[:1], injected // half a dump, then interrupted
		}
		return want, nil
	}
	if s, _, err := OpenRebuilding(path, slog.New(slog.DiscardHandler), dump); !errors.Is(err, injected) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("open with a rebuild interrupted at %s: %v, want the injected error", step, err)
	}

	rebuildFault = func(string) error { return nil }
	st, moved := loadRebuilding(t, path, dump2(want))
	if moved == "" || len(st.Allocations) != len(want) {
		t.Fatalf("next start: moved %q, %d allocations; want the rebuild redone with %d", moved, len(st.Allocations), len(want))
	}
	if _, err := os.Stat(path + ".rebuild"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary rebuild file left behind: %v", err)
	}
}

// loadRebuilding opens the store at path with rebuild, closed when the test ends, and loads it.
func loadRebuilding(t *testing.T, path string, rebuild RebuildFunc) (st State, movedAside string) {
	t.Helper()
	s, movedAside, err := OpenRebuilding(path, slog.New(slog.DiscardHandler), rebuild)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if st, err = s.Load(); err != nil {
		t.Fatal(err)
	}
	return st, movedAside
}

// damageLog leaves at path a sound state file and a log whose first of two records is damaged.
func damageLog(t *testing.T, path string) {
	t.Helper()
	img, ends := loggedImage(t, alloc(8), alloc(9))
	img.log[ends[0]/2] ^= 0xff
	if err := os.WriteFile(path, img.db, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logPath(path), img.log, 0o600); err != nil {
		t.Fatal(err)
	}
}

func dump2(a []Allocation) RebuildFunc { return func() ([]Allocation, error) { return a, nil } }

func TestRebuildKeepsTheDamagedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	writeGarbage(t, path)
	before, _ := os.ReadFile(path)
	s, moved, err := OpenRebuilding(path, slog.New(slog.DiscardHandler), dump2([]Allocation{alloc(7)}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if kept, err := os.ReadFile(moved); err != nil || string(kept) != string(before) {
		t.Fatalf("damaged file not kept at %q: %v", moved, err)
	}
	if st, _ := s.Load(); len(st.Allocations) != 1 || st.Allocations[0].Addr != alloc(7).Addr {
		t.Fatalf("rebuilt state %v", st.Allocations)
	}
}

func TestCloseIsIdempotentAndLaterCommitsFail(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	for name, commit := range map[string]func() error{
		"put":     func() error { return s.PutAllocation(alloc(1)) },
		"release": func() error { return s.ReleaseAllocation(alloc(1).Owner.Key, alloc(1).Addr, alloc(1).AssignedAt) },
		"mark":    func() error { return s.MarkPendingRelease(nil) },
		"forget":  func() error { return s.ForgetAddrs([]netip.Addr{alloc(2).Addr}) },
	} {
		if err := commit(); name != "mark" && !errors.Is(err, ErrClosed) {
			t.Errorf("%s after close: %v, want ErrClosed", name, err)
		}
	}
	if _, err := s.Load(); err == nil {
		t.Error("load after close succeeded")
	}
}

func TestCommitsRacingCloseNeverPanic(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	done := make(chan error, 64)
	for i := range 64 {
		go func() { done <- s.PutAllocation(alloc(i)) }()
	}
	s.Close()
	for range 64 {
		if err := <-done; err != nil && !errors.Is(err, ErrClosed) {
			t.Fatalf("commit racing close: %v", fmt.Sprint(err))
		}
	}
}

// TestRebuildKeepsEveryOwnerField: a rebuilt file holds the same versioned record as a
// commit, so the network and pod UID of what the datapath reported survive the rebuild.
func TestRebuildKeepsEveryOwnerField(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	writeGarbage(t, path)
	a := alloc(1)
	fillStrings(reflect.ValueOf(&a.Owner).Elem(), "x")
	st, _ := loadRebuilding(t, path, dump2([]Allocation{a}))
	if len(st.Allocations) != 1 || !reflect.DeepEqual(st.Allocations[0].Owner, a.Owner) {
		t.Fatalf("owner after rebuild:\n got %+v\nwant %+v", st.Allocations, a.Owner)
	}
}

// TestAMissingStateFileStartsFromTheDatapath: a state file cns creates (a deleted one, a new
// disk) starts with the live pods the datapath shows, so their addresses never look free; an
// existing file is never rebuilt from the datapath.
func TestAMissingStateFileStartsFromTheDatapath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, moved, err := OpenRebuilding(path, slog.New(slog.DiscardHandler), dump2([]Allocation{alloc(7)}))
	if err != nil || moved != "" {
		t.Fatalf("open: moved %q, %v", moved, err)
	}
	if got := addrsOf(t, s); !slices.Equal(got, []netip.Addr{alloc(7).Addr}) {
		t.Fatalf("allocations %v, want the datapath's", got)
	}
	if err := s.ReleaseAllocation(alloc(7).Owner.Key, alloc(7).Addr, time.Time{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, _, err = OpenRebuilding(path, slog.New(slog.DiscardHandler), func() ([]Allocation, error) {
		t.Error("the datapath was read for an existing state file")
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := addrsOf(t, s); len(got) != 0 {
		t.Fatalf("allocations %v after the release and a restart", got)
	}
	// A datapath that cannot be read leaves no state file for the next start to trust.
	fresh := filepath.Join(t.TempDir(), "state.db")
	failing := func() ([]Allocation, error) { return nil, errors.New("netlink: dump interrupted") }
	if s, _, err := OpenRebuilding(fresh, slog.New(slog.DiscardHandler), failing); err == nil {
		s.Close()
		t.Fatal("a new state file was started while the datapath could not be read")
	}
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state file after a start that could not read the datapath: %v, want none", err)
	}
}
