// Package stack runs mockarm and cns in-process for tests: the real armnetwork client talks
// HTTP to mockarm on loopback, and tests talk gRPC to cns over its unix socket and TCP.
package stack

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/vnet-cni/vnet-cni/cns"
	"github.com/vnet-cni/vnet-cni/cns/cloud/azure"
	"github.com/vnet-cni/vnet-cni/cns/store"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
	"github.com/vnet-cni/vnet-cni/test/nettest"
)

// NICName is the node NIC every stack uses.
const NICName = "node0-nic"

// Options tune a stack; zero values take test-friendly defaults.
type Options struct {
	Mock   func(*mockarm.Config) // adjust mockarm before it starts
	Config func(*cns.Config)     // adjust cns before it starts
	Dir    string                // state directory; default t.TempDir()
	// WrapStore, if set, stands between cns and its store (fault injection).
	WrapStore func(*store.Store) cns.Store
	// ScaleSet makes the node an instance of a uniform scale set: its NIC is written through
	// the scale-set VM update instead of a NIC PUT.
	ScaleSet bool
}

// Stack is a running mockarm + cns.
type Stack struct {
	t        testing.TB
	Dir      string
	Mock     *mockarm.Server
	MockURL  string
	Socket   string
	TCPAddr  string
	Cfg      cns.Config
	Conn     *grpc.ClientConn // unix socket
	IPAM     cnsv1grpc.IPAMServiceClient
	Pool     cnsv1grpc.PoolServiceClient
	mockSrv  *httptest.Server
	handler  atomic.Pointer[http.Handler] // what mockSrv serves; swapped while serving
	cancel   context.CancelFunc
	done     chan error
	st       *store.Store
	mockConf mockarm.Config
	wrap     func(*store.Store) cns.Store
	nicID    string
}

// Quiet is a logger for tests: warnings and errors only, to the test log.
func Quiet(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// Start runs a stack and registers its teardown.
func Start(t testing.TB, o Options) *Stack {
	t.Helper()
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "cns")
		if err != nil {
			t.Fatal(err)
		}
		dir = d
		t.Cleanup(func() { os.RemoveAll(d) })
	}
	mc := mockarm.DefaultConfig()
	mc.AutoCreateNICs = true
	mc.StatePath = filepath.Join(dir, "mockarm.json")
	mc.Log = Quiet(t)
	if o.Mock != nil {
		o.Mock(&mc)
	}
	s := &Stack{t: t, Dir: dir, mockConf: mc, wrap: o.WrapStore}
	s.startMock()

	cfg := cns.DefaultConfig()
	cfg.Socket = filepath.Join(dir, "cns.sock")
	cfg.Listen = nettest.FreeLoopbackAddr(t)
	cfg.MetricsListen = ""
	cfg.StatePath = filepath.Join(dir, "cns.db")
	cfg.Pool.ReleaseSpool = filepath.Join(dir, "spool")
	cfg.Azure = azure.Config{Endpoint: s.MockURL, Subscription: mc.Subscription, ResourceGroup: mc.ResourceGroup,
		NIC: NICName, Auth: azure.AuthStatic, StaticToken: "test"}
	s.nicID = mockarm.NICID(mc.Subscription, mc.ResourceGroup, NICName)
	if o.ScaleSet {
		cfg.Azure.ScaleSet, cfg.Azure.Instance = "pool", "0"
		s.nicID = mockarm.ScaleSetNICID(mc.Subscription, mc.ResourceGroup, "pool", "0", NICName)
		if _, err := s.Mock.CreateScaleSetVM(mc.Subscription, mc.ResourceGroup, "pool", "0", NICName, netip.Addr{}); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Pool.RequestWait = 10 * time.Second
	cfg.Pool.CloudTimeout = 10 * time.Second
	cfg.Pool.BackoffMin = 50 * time.Millisecond
	cfg.Pool.BackoffMax = time.Second
	if o.Config != nil {
		o.Config(&cfg)
	}
	s.Cfg, s.Socket, s.TCPAddr = cfg, cfg.Socket, cfg.Listen
	s.StartCNS()
	t.Cleanup(s.Stop)
	return s
}

func (s *Stack) startMock() {
	m, err := mockarm.New(s.mockConf)
	if err != nil {
		s.t.Fatal(err)
	}
	s.Mock = m
	s.serve(m)
	if s.mockSrv == nil {
		s.mockSrv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			(*s.handler.Load()).ServeHTTP(w, r)
		}))
		s.MockURL = s.mockSrv.URL
	}
}

func (s *Stack) serve(h http.Handler) { s.handler.Store(&h) }

// RestartMock replaces mockarm with a new one loaded from its state file, as a process
// restart would; cns keeps the same endpoint.
func (s *Stack) RestartMock() { s.startMock() }

// StartCNS starts cns (again) and waits until its pool is ready.
func (s *Stack) StartCNS() {
	s.t.Helper()
	var nic cns.NICAPI
	cred, err := azure.Credential(s.Cfg.Azure)
	if err == nil && s.Cfg.Azure.ScaleSet != "" {
		nic, err = azure.NewScaleSet(s.Cfg.Azure, cred)
	} else if err == nil {
		nic, err = azure.NewWithCredential(s.Cfg.Azure, cred)
	}
	if err != nil {
		s.t.Fatal(err)
	}
	st, moved, err := store.Open(s.Cfg.StatePath, Quiet(s.t))
	if err != nil {
		s.t.Fatal(err)
	}
	if moved != "" {
		s.t.Logf("state moved aside to %s", moved)
	}
	s.st = st
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan error, 1)
	var cst cns.Store = st
	if s.wrap != nil {
		cst = s.wrap(st)
	}
	go func() { s.done <- cns.Serve(ctx, s.Cfg, nic, cst, Quiet(s.t)) }()
	conn, err := grpc.NewClient("unix://"+s.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.t.Fatal(err)
	}
	s.Conn, s.IPAM, s.Pool = conn, cnsv1grpc.NewIPAMServiceClient(conn), cnsv1grpc.NewPoolServiceClient(conn)
	s.WaitReady()
}

// WaitReady polls Status until cns has read the NIC and opened the pool, failing after 20 s.
func (s *Stack) WaitReady() {
	s.t.Helper()
	if err := WaitCNSReady(s.IPAM, 20*time.Second); err != nil {
		s.t.Fatal(err)
	}
}

// WaitCNSReady polls a cns's Status until it has read the NIC (no longer STARTING).
func WaitCNSReady(ipam cnsv1grpc.IPAMServiceClient, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := ipam.Status(ctx, &cnsv1.StatusRequest{})
		cancel()
		if err == nil && st.GetReason() != cnsv1.NotReadyReason_NOT_READY_REASON_STARTING {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("cns not ready within %s", within)
}

// StopCNS stops cns gracefully and closes its store.
func (s *Stack) StopCNS() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	if err := <-s.done; err != nil {
		s.t.Errorf("cns: %v", err)
	}
	s.Conn.Close()
	s.st.Close()
	s.cancel = nil
}

// Stop tears the whole stack down.
func (s *Stack) Stop() {
	s.StopCNS()
	if s.mockSrv != nil {
		s.mockSrv.Close()
		s.mockSrv = nil
	}
}

// Ctx returns a context bounded for one test step.
func (s *Stack) Ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	s.t.Cleanup(cancel)
	return ctx
}

// WaitFor polls GetPool until cond holds, failing the test after 20 s.
func (s *Stack) WaitFor(what string, cond func(*cnsv1.GetPoolResponse) bool) *cnsv1.GetPoolResponse {
	s.t.Helper()
	p, err := PollPool(s.Pool, 20*time.Second, cond)
	if err != nil {
		s.t.Fatalf("waiting for %s: %v", what, err)
	}
	return p
}

// PollPool polls a cns's GetPool until cond holds or within passes; the error carries the
// last pool seen.
func PollPool(pool cnsv1grpc.PoolServiceClient, within time.Duration, cond func(*cnsv1.GetPoolResponse) bool) (*cnsv1.GetPoolResponse, error) {
	deadline := time.Now().Add(within)
	var last *cnsv1.GetPoolResponse
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		p, err := pool.GetPool(ctx, &cnsv1.GetPoolRequest{})
		cancel()
		if err == nil {
			last = p
			if cond(p) {
				return p, nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil, fmt.Errorf("pool did not get there within %s; last seen: %v", within, last)
}

// NICAddrs returns the NIC's secondary addresses as mockarm holds them.
func (s *Stack) NICAddrs() []netip.Addr {
	a, ok := s.Mock.NICAddrsByID(s.nicID)
	if !ok {
		s.t.Fatal("NIC not found in mockarm")
	}
	return a
}

// Request asks cns for the address of (id, eth0).
func (s *Stack) Request(ctx context.Context, id string) (netip.Addr, error) {
	r, err := s.IPAM.RequestIPs(ctx, &cnsv1.RequestIPsRequest{ContainerId: id, Ifname: "eth0"})
	if err != nil {
		return netip.Addr{}, err
	}
	p, err := netip.ParsePrefix(r.GetIpConfigs()[0].GetAddress())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("bad address in answer: %w", err)
	}
	return p.Addr(), nil
}

// MockDown makes mockarm unreachable: every connection is closed without an answer, as
// when the ARM front end is down. MockUp brings it back.
func (s *Stack) MockDown() {
	s.serve(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
			}
		}
	}))
}

// MockUp undoes MockDown.
func (s *Stack) MockUp() { s.serve(s.Mock) }

// Allocations lists cns's allocations, failing the test on error.
func (s *Stack) Allocations() []*cnsv1.Allocation {
	s.t.Helper()
	r, err := s.Pool.ListAllocations(s.Ctx(), &cnsv1.ListAllocationsRequest{})
	if err != nil {
		s.t.Fatal(err)
	}
	return r.GetAllocations()
}
