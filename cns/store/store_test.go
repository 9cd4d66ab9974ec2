package store

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vnet-cni/vnet-cni/ipampool"
)

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, moved, err := Open(path, slog.New(slog.DiscardHandler))
	if err != nil || moved != "" {
		t.Fatalf("open: %v (moved %q)", err, moved)
	}
	return s
}

func alloc(i int) Allocation {
	return Allocation{Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}),
		Owner:      ipampool.Owner{Key: ipampool.Key{ContainerID: fmt.Sprint("c", i), IfName: "eth0"}, PodName: "p"},
		AssignedAt: time.Unix(int64(i), 0).UTC()}
}

func TestStateSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	var wg sync.WaitGroup
	for i := 1; i <= 50; i++ { // concurrent writers exercise group commit
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.PutAllocation(alloc(i)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	until := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := s.ReleaseAllocation(alloc(1).Owner.Key, alloc(1).Addr, until); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkPendingRelease([]netip.Addr{alloc(60).Addr, alloc(61).Addr}); err != nil {
		t.Fatal(err)
	}
	if err := s.ForgetAddrs([]netip.Addr{alloc(61).Addr}); err != nil {
		t.Fatal(err)
	}
	// Reassigning a cooled address clears its cooldown record.
	if err := s.PutAllocation(Allocation{Addr: alloc(1).Addr, Owner: alloc(99).Owner}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	st, err := open(t, path).Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Allocations) != 50 {
		t.Fatalf("%d allocations after reopen, want 50", len(st.Allocations))
	}
	if len(st.Cooldowns) != 0 {
		t.Fatalf("cooldowns %v: reassignment should have cleared it", st.Cooldowns)
	}
	if len(st.PendingReleases) != 1 || st.PendingReleases[0] != alloc(60).Addr {
		t.Fatalf("pending releases %v", st.PendingReleases)
	}
}

func TestCooldownSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	s.PutAllocation(alloc(1))
	until := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s.ReleaseAllocation(alloc(1).Owner.Key, alloc(1).Addr, until)
	s.Close()
	st, _ := open(t, path).Load()
	if got := st.Cooldowns[alloc(1).Addr]; !got.Equal(until) || len(st.Allocations) != 0 {
		t.Fatalf("cooldown %v allocations %v", got, st.Allocations)
	}
}

func TestCorruptFileIsMovedAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	s.PutAllocation(alloc(1))
	s.Close()
	b, _ := os.ReadFile(path)
	if err := os.WriteFile(path, b[:100], 0o600); err != nil { // truncated mid-page
		t.Fatal(err)
	}
	s, moved, err := Open(path, slog.New(slog.DiscardHandler))
	if err != nil || moved == "" {
		t.Fatalf("open truncated file: moved %q, err %v; want it moved aside", moved, err)
	}
	defer s.Close()
	if _, err := os.Stat(moved); err != nil {
		t.Fatalf("moved-aside file: %v", err)
	}
	if st, _ := s.Load(); len(st.Allocations) != 0 {
		t.Fatalf("fresh store holds %v", st.Allocations)
	}
}

func TestTornFileAtAnyLengthIsMovedAside(t *testing.T) {
	// A big enough state that truncation can cut data pages while the meta pages survive:
	// bbolt then faults (SIGBUS through its mmap) or fails a page assertion rather than
	// returning an error. Either must end with the file moved aside, not a crash.
	dir := t.TempDir()
	src := filepath.Join(dir, "full.db")
	s := open(t, src)
	for i := range 2000 {
		a := alloc(i % 250)
		a.Owner.ContainerID = fmt.Sprintf("container-%06d-%s", i, strings.Repeat("x", 40))
		if err := s.PutAllocation(a); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	full, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{100, 4096, 9000, len(full) / 3, len(full) / 2, len(full) - 4096} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(path, full[:n], 0o600); err != nil {
				t.Fatal(err)
			}
			s, moved, err := Open(path, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatalf("open of a file torn at %d of %d bytes: %v", n, len(full), err)
			}
			defer s.Close()
			// Never a damaged state in use: either moved aside, or the cut took only free
			// space and every record reads back.
			if moved != "" {
				return
			}
			st, err := s.Load()
			if err != nil || len(st.Allocations) != 2000 {
				t.Fatalf("file torn at %d of %d bytes kept in use with %d of 2000 allocations (%v)", n, len(full), len(st.Allocations), err)
			}
		})
	}
}

func TestLockedFileIsNotDiscarded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	defer s.Close()
	s.PutAllocation(alloc(1))
	_, moved, err := Open(path, slog.New(slog.DiscardHandler))
	if err == nil || moved != "" {
		t.Fatalf("second open of a locked file: moved %q, err %v; want an error and nothing moved", moved, err)
	}
}

func TestV1AllocationRecordLoadsWithoutNetwork(t *testing.T) {
	v1 := `{"addr":"10.0.0.9","owner":{"ContainerID":"c","IfName":"eth0","PodNamespace":"ns","PodName":"p","Netns":"/n"},"assignedAt":"2026-01-01T00:00:00Z"}`
	a, err := decodeAllocation([]byte(v1))
	if err != nil {
		t.Fatal(err)
	}
	want := Allocation{Addr: netip.MustParseAddr("10.0.0.9"), AssignedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Owner: ipampool.Owner{Key: ipampool.Key{ContainerID: "c", IfName: "eth0"}, PodNamespace: "ns", PodName: "p", Netns: "/n"}}
	if a != want {
		t.Fatalf("v1 record: %+v, want %+v", a, want)
	}
	want.Owner.Network = "vnet-b"
	b, _ := encodeAllocation(want)
	if back, err := decodeAllocation(b); err != nil || back != want || !strings.Contains(string(b), `"v":2`) {
		t.Fatalf("v2 round trip: %s -> %+v %v", b, back, err)
	}
	if _, err := decodeAllocation([]byte(`{"v":3}`)); err == nil {
		t.Fatal("a record from a newer cns was read as this version")
	}
}
