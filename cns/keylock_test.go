package cns

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vnet-cni/vnet-cni/cns/cloud"
	"github.com/vnet-cni/vnet-cni/cns/store"
	"github.com/vnet-cni/vnet-cni/ipampool"
	"github.com/vnet-cni/vnet-cni/proto/cns/v1/contract"
)

// gatedNIC holds the first NIC read until gate closes and every write until its context ends.
type gatedNIC struct {
	gate  chan struct{}
	addrs []netip.Addr
}

func (n *gatedNIC) GetNIC(ctx context.Context) (cloud.NIC, error) {
	select {
	case <-n.gate:
	case <-ctx.Done():
		return cloud.NIC{}, ctx.Err()
	}
	return cloud.NIC{ID: "nic", ETag: "1", Primary: netip.MustParseAddr("10.0.0.4"),
		Subnet: netip.MustParsePrefix("10.0.0.0/24"), Secondaries: n.addrs}, nil
}

func (n *gatedNIC) UpdateIPConfigs(ctx context.Context, _ cloud.Change) (cloud.NIC, error) {
	<-ctx.Done()
	return cloud.NIC{}, ctx.Err()
}

func addrRange(from, n int) (out []netip.Addr) {
	for i := range n {
		out = append(out, netip.AddrFrom4([4]byte{10, 0, 0, byte(from + i)}))
	}
	return out
}

// newTestManager runs a manager over nic and a fresh store until the test ends.
func newTestManager(t *testing.T, nic NICAPI, spool string, allocs ...store.Allocation) *Manager {
	t.Helper()
	st, _, err := store.Open(filepath.Join(t.TempDir(), "state.db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range allocs {
		if err := st.PutAllocation(a); err != nil {
			t.Fatal(err)
		}
	}
	cfg := ManagerConfig{Limits: ipampool.DefaultLimits(), RequestWait: 20 * time.Second, CloudTimeout: time.Hour,
		ReconcileInterval: time.Hour, BackoffMin: time.Second, BackoffMax: time.Second, ReleaseSpool: spool}
	t.Cleanup(func() { st.Close() }) // after the manager has stopped (cleanups run last first)
	return runManager(t, cfg, nic, st)
}

// A request that arrives while cns starts waits for the pool; startup replays spooled
// releases under the key locks. Before, the request took its key lock first and then waited
// for startup, while startup's replay waited for that lock: cns opened only when the
// request gave up (RequestWait later), and the request failed.
func TestStartupNeverWaitsOnARequestsKeyLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		key := ipampool.Key{ContainerID: "c1", IfName: "eth0"}
		t0 := time.Now()
		spool := t.TempDir()
		rec, _ := json.Marshal(contract.SpoolRecord{ContainerID: key.ContainerID, IfName: key.IfName, At: t0.Add(time.Second)})
		if err := os.WriteFile(filepath.Join(spool, "c1.json"), rec, 0o600); err != nil {
			t.Fatal(err)
		}
		nic := &gatedNIC{gate: make(chan struct{}), addrs: addrRange(5, 16)}
		m := newTestManager(t, nic, spool, store.Allocation{Addr: nic.addrs[0], Owner: ipampool.Owner{Key: key}, AssignedAt: t0})

		type result struct {
			g   Grant
			err error
		}
		res := make(chan result, 1)
		go func() { // the ADD of a new pod reusing the key (the DEL reached only the spool)
			g, err := m.RequestIP(context.Background(), ipampool.Owner{Key: key})
			res <- result{g, err}
		}()
		synctest.Wait() // the request waits for startup; startup waits for the NIC
		time.Sleep(time.Second)
		close(nic.gate)
		r := <-res
		if r.err != nil {
			t.Fatalf("request during startup: %v", r.err)
		}
		if !r.g.Entry.AssignedAt.After(t0) {
			t.Fatalf("request got the allocation of %s the spool released", r.g.Entry.AssignedAt)
		}
	})
}

// A second call on a key in use gives up when its context ends, instead of waiting for the
// first (here an ADD waiting on a scale-up that does not come) however long that takes.
func TestKeyLockWaiterGivesUpWhenItsContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nic := &gatedNIC{gate: make(chan struct{})}
		close(nic.gate)
		m := newTestManager(t, nic, "")
		m.cfg.RequestWait = time.Hour
		<-m.Ready()
		key := ipampool.Key{ContainerID: "c1", IfName: "eth0"}
		first, cancelFirst := context.WithCancel(context.Background())
		defer cancelFirst()
		go m.RequestIP(first, ipampool.Owner{Key: key}) // waits for addresses that never come
		synctest.Wait()

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := m.RequestIP(ctx, ipampool.Owner{Key: key})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("second request on a busy key: %v, want it to give up with its deadline", err)
		}
		cancelFirst()
	})
}
