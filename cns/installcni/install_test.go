package installcni

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
)

// The CNI config appears only after cns reports SERVING, and then whole, with the plugin
// executable beside it.
func TestInstallsConflistOnlyOnceCNSIsServing(t *testing.T) {
	hs := health.NewServer()
	hs.SetServingStatus(cnsv1grpc.IPAMService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	var checks atomic.Int32
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		checks.Add(1)
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, hs)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Stop()

	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "vnet-cni"), []byte("#!plugin"), 0o600)
	os.WriteFile(filepath.Join(src, "10-vnet.conflist"), []byte(`{"name":"vnet"}`), 0o600)
	c := Config{Health: l.Addr().String(), Plugin: filepath.Join(src, "vnet-cni"), BinDir: filepath.Join(dir, "bin"),
		Conflist: filepath.Join(src, "10-vnet.conflist"), ConfDir: filepath.Join(dir, "net.d"), Interval: 5 * time.Millisecond, Timeout: time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	if err := Run(ctx, Config{Health: c.Health, Probe: true, Timeout: time.Second}, log); err == nil {
		t.Error("readiness probe succeeded while cns is NOT_SERVING")
	}
	if err := Run(ctx, Config{Health: c.Health, Probe: true, Alive: true, Timeout: time.Second}, log); err != nil {
		t.Errorf("liveness probe failed while cns answers: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- Run(ctx, c, log) }()
	for checks.Load() < 5 { // several NOT_SERVING answers seen
		select {
		case err := <-done:
			t.Fatalf("install finished while cns was NOT_SERVING: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	if _, err := os.Stat(filepath.Join(c.ConfDir, "10-vnet.conflist")); !os.IsNotExist(err) {
		t.Fatalf("conflist present before cns was serving (%v)", err)
	}
	hs.SetServingStatus(cnsv1grpc.IPAMService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(c.ConfDir, "10-vnet.conflist")); err != nil || string(b) != `{"name":"vnet"}` {
		t.Errorf("conflist: %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(c.BinDir, "vnet-cni")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("plugin: %v, %v; want mode 0755", fi, err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*", ".*tmp-*")); len(m) > 0 {
		t.Errorf("temporary files left: %v", m)
	}
	if err := Run(ctx, Config{Health: c.Health, Probe: true, Timeout: time.Second}, log); err != nil {
		t.Errorf("readiness probe failed while SERVING: %v", err)
	}
}
