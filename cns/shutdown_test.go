package cns_test

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vnet-cni/vnet-cni/cns"
	"github.com/vnet-cni/vnet-cni/cns/cloud"
	"github.com/vnet-cni/vnet-cni/cns/store"
)

// stuckCloud answers reads at once and holds every write past its deadline until released,
// as an ARM call that ignores cancellation would.
type stuckCloud struct {
	writing  chan struct{} // closed when the first write starts
	release  chan struct{}
	finished atomic.Bool
}

func (c *stuckCloud) GetNIC(context.Context) (cloud.NIC, error) {
	return cloud.NIC{ID: "nic", ETag: "1", Primary: netip.MustParseAddr("10.0.0.4"), Subnet: netip.MustParsePrefix("10.0.0.0/24")}, nil
}

func (c *stuckCloud) UpdateIPConfigs(ctx context.Context, _ cloud.Change) (cloud.NIC, error) {
	select {
	case <-c.writing:
	default:
		close(c.writing)
	}
	<-ctx.Done()
	<-c.release
	c.finished.Store(true)
	return cloud.NIC{}, ctx.Err()
}

// logWatch signals when a record containing want is logged.
type logWatch struct {
	slog.Handler
	want string
	seen chan struct{}
	once atomic.Bool
}

func (h *logWatch) Enabled(context.Context, slog.Level) bool { return true }

func (h *logWatch) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.want) && h.once.CompareAndSwap(false, true) {
		close(h.seen)
	}
	return nil
}

// The caller closes the store as soon as Serve returns (Run defers it): so Serve must not
// return while the pool loop, which commits to the store, is still running. Before, Serve
// gave up waiting after CloudTimeout and the late commit hit a closed store (a panic).
func TestServeNeverReturnsBeforeItsPoolLoop(t *testing.T) {
	dir, err := os.MkdirTemp("", "cns-shutdown")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := cns.DefaultConfig()
	cfg.Socket, cfg.StatePath, cfg.Listen, cfg.MetricsListen = filepath.Join(dir, "cns.sock"), filepath.Join(dir, "state.db"), "", ""
	cfg.Pool.ReleaseSpool = ""
	cfg.Pool.CloudTimeout = 50 * time.Millisecond
	st, _, err := store.Open(cfg.StatePath, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	nic := &stuckCloud{writing: make(chan struct{}), release: make(chan struct{})}
	var released atomic.Bool
	releaseOnce := func() {
		if released.CompareAndSwap(false, true) {
			close(nic.release)
		}
	}
	t.Cleanup(releaseOnce)
	watch := &logWatch{Handler: slog.DiscardHandler, want: "waiting for it before closing the store", seen: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cns.Serve(ctx, cfg, nic, st, slog.New(watch)) }()
	select {
	case <-nic.writing:
	case <-time.After(20 * time.Second):
		t.Fatal("the pool never wrote to the NIC")
	}
	cancel()
	select {
	case err = <-done: // returned without waiting for the write
	case <-watch.seen: // waiting for the write, as it must: let the write end
		releaseOnce()
		err = <-done
	}
	if err != nil {
		t.Fatal(err)
	}
	if !nic.finished.Load() {
		t.Fatal("Serve returned while its pool loop was still inside a NIC write: the loop outlives the store")
	}
}
