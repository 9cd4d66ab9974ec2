package cns

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"k8s.io/client-go/rest"

	"github.com/vnet-cni/vnet-cni/cns/cloud/crd"
	"github.com/vnet-cni/vnet-cni/cns/k8s"
	"github.com/vnet-cni/vnet-cni/cns/masq"
	"github.com/vnet-cni/vnet-cni/cns/store"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
)

var (
	_ NICAPI = (*crd.Node)(nil)
	_ Store  = (*store.Store)(nil)
)

// Run serves cns until ctx ends, then shuts down in order: stop taking RPCs (letting those
// in flight finish), let the pool loop finish its cloud write, close the store.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	// The NodeNetworkConfig informer outlives ctx so that a write in flight at shutdown still
	// sees its answer; it stops when Run returns.
	nicCtx, stopNIC := context.WithCancel(context.WithoutCancel(ctx))
	defer stopNIC()
	nic, err := openNIC(ctx, nicCtx, cfg, log)
	if err != nil {
		return err
	}
	if err := configureMasq(ctx, cfg, nic, log); err != nil {
		return err
	}
	var recovered int
	st, movedAside, err := store.OpenRebuilding(cfg.StatePath, log, func() ([]store.Allocation, error) {
		allocs, err := recoverFromDatapath(time.Now())
		if err != nil {
			return nil, fmt.Errorf("state file lost and the datapath unreadable: %w", err)
		}
		recovered = len(allocs)
		return allocs, nil
	})
	if err != nil {
		return err
	}
	defer st.Close()
	if movedAside != "" {
		log.Error("STATE REBUILT: the state file or its change log (<state>.wal) was damaged and was kept aside; allocations were rebuilt from the node's datapath, "+
			"the rest of the pool from the NIC; cooldowns are lost", "movedTo", movedAside, "recoveredAllocations", recovered)
	}
	return Serve(ctx, cfg, nic, st, log)
}

// configureMasq installs the masquerade rules with --ip-masq, or removes the table a previous
// run with --ip-masq left. The non-masquerade CIDRs default to masq.DefaultNonMasq of the NIC's
// subnet; a NIC that cannot be read yet (the cloud down at boot) does not stop cns, it only
// leaves the subnet out (it matters only for a VNet in public space). The rules stay when cns
// stops: pods keep their egress across a restart.
func configureMasq(ctx context.Context, cfg Config, nic NICAPI, log *slog.Logger) error {
	if !cfg.IPMasq {
		removed, err := masq.Remove()
		if err != nil {
			log.Debug("--ip-masq off: cannot check for a masquerade table left by an earlier run", "error", err)
		} else if removed {
			log.Info("--ip-masq off: removed the masquerade table an earlier run left", "table", masq.Table)
		}
		return nil
	}
	cidrs := cfg.NonMasqCIDRs
	if len(cidrs) == 0 {
		cctx, cancel := context.WithTimeout(ctx, cfg.BootstrapTimeout)
		n, err := nic.GetNIC(cctx)
		cancel()
		if err != nil {
			log.Warn("--ip-masq: the NIC's subnet is not known yet; masquerading outside RFC 1918 only", "error", err)
		}
		cidrs = masq.DefaultNonMasq(n.Subnet)
	}
	if err := masq.Apply(cidrs); err != nil {
		return fmt.Errorf("--ip-masq: %w", err)
	}
	log.Info("masquerading pod traffic outside the non-masquerade CIDRs and link-local", "nonMasqueradeCIDRs", cidrs, "table", masq.Table)
	return nil
}

// maxStreamsTCP bounds concurrent streams per connection on the read-only TCP listener.
const maxStreamsTCP = 32

// streamWorkersUnix is how many RPCs on the unix socket run at once on grpc's warm worker
// goroutines. grpc hands a stream only to an idle worker; when all are busy (each RequestIPs
// or ReleaseIPs waits about a millisecond for its group commit) the stream gets a goroutine
// of its own, whose stack is grown and copied afresh. With GOMAXPROCS workers that stack
// growth was 6% of the CPU of 64 concurrent clients (the pairs benchmark); 64 covers the CNI
// calls of a node starting or stopping many pods at once. An idle worker costs its stack. A
// WatchPool stream holds its worker while it lasts: with maxWatchersUnix streams open, the
// calls go back to goroutines of their own (slower, not wrong).
const streamWorkersUnix = 64

// openNIC builds the cloud side --ipam-source selects: ARM, or the node's NodeNetworkConfig.
// Finding it is bounded by --bootstrap-timeout and by ctx (a SIGTERM during start-up); what it
// keeps running (the NodeNetworkConfig informer) lives as long as life.
func openNIC(ctx, life context.Context, cfg Config, log *slog.Logger) (NICAPI, error) {
	boot, cancel := context.WithTimeout(ctx, cfg.BootstrapTimeout)
	defer cancel()
	src := cfg.IPAMSource
	var rc *rest.Config
	if src != IPAMSourceAzure {
		var err error
		if rc, err = k8s.RestConfig(cfg.Kube.Kubeconfig); err != nil && src == IPAMSourceCRD {
			return nil, fmt.Errorf("cluster mode: kubeconfig: %w", err)
		}
		if src == IPAMSourceAuto {
			src = IPAMSourceAzure
			if err == nil {
				if ok, err := crd.Served(boot, rc); err != nil {
					return nil, fmt.Errorf("--ipam-source auto: %w", err)
				} else if ok {
					src = IPAMSourceCRD
				}
			}
			log.Info("ipam source chosen", "source", src)
		}
	}
	if src == IPAMSourceCRD {
		node, err := k8s.ResolveNodeName(cfg.Kube.NodeName)
		if err != nil {
			return nil, fmt.Errorf("cluster mode: %w", err)
		}
		n, err := crd.Open(life, boot, rc, node, log)
		if err != nil {
			return nil, fmt.Errorf("cluster mode: %w", err)
		}
		return n, nil
	}
	nic, err := connectCloud(life, cfg, log)
	if err != nil {
		return nil, fmt.Errorf("cloud: %w", err)
	}
	return nic, nil
}

// Serve runs the manager and the listeners over the given cloud and store.
func Serve(ctx context.Context, cfg Config, nic NICAPI, st Store, log *slog.Logger) error {
	m, err := NewManager(cfg.Pool, nic, st, log)
	if err != nil {
		return err
	}
	if err := m.Restore(); err != nil {
		return err
	}
	stopKube, err := startKube(ctx, cfg.Kube, m, log)
	if err != nil {
		return fmt.Errorf("API server: %w", err)
	}
	defer stopKube()
	if n, ok := nic.(interface{ SetInUse(func() int) }); ok {
		n.SetInUse(func() int { return int(m.Snapshot().GetCounts().GetAssigned()) })
	}
	unixL, err := listenUnix(cfg.Socket)
	if err != nil {
		return err
	}
	hs := health.NewServer()
	hs.SetServingStatus(cnsv1grpc.IPAMService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	opts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(metricsInterceptor), grpc.MaxRecvMsgSize(8 << 20)}
	full := grpc.NewServer(append(opts, grpc.NumStreamWorkers(streamWorkersUnix))...)
	cnsv1grpc.RegisterIPAMServiceServer(full, &ipamService{m: m})
	cnsv1grpc.RegisterPoolServiceServer(full, newPoolService(m, maxWatchersUnix))
	healthpb.RegisterHealthServer(full, hs)
	reflection.Register(full)
	servers := []*grpc.Server{full}

	errc := make(chan error, 4)
	go func() { errc <- serveGRPC(full, unixL, "unix "+cfg.Socket) }()
	if cfg.Listen != "" {
		tcpL, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			full.Stop()
			return fmt.Errorf("listen %s: %w", cfg.Listen, err)
		}
		// Read-only: IPAMService is not registered, so it is Unimplemented here. Anyone on
		// the host can reach it, so its streams per connection are bounded too.
		ro := grpc.NewServer(append(opts, grpc.MaxConcurrentStreams(maxStreamsTCP),
			grpc.NumStreamWorkers(uint32(max(runtime.GOMAXPROCS(0), 2))))...)
		cnsv1grpc.RegisterPoolServiceServer(ro, newPoolService(m, maxWatchersTCP))
		healthpb.RegisterHealthServer(ro, hs)
		reflection.Register(ro)
		servers = append(servers, ro)
		go func() { errc <- serveGRPC(ro, tcpL, "tcp "+tcpL.Addr().String()) }()
	}
	var metricsSrv *http.Server
	if cfg.MetricsListen != "" {
		ml, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			for _, s := range servers {
				s.Stop()
			}
			return fmt.Errorf("listen %s: %w", cfg.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(newRegistry(m), promhttp.HandlerOpts{}))
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := metricsSrv.Serve(ml); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics: %w", err)
			}
		}()
	}

	loopCtx, stopLoop := context.WithCancel(context.WithoutCancel(ctx))
	loopDone := make(chan struct{})
	go func() { defer close(loopDone); m.Run(loopCtx) }()
	go func() {
		select {
		case <-m.Ready():
			hs.SetServingStatus(cnsv1grpc.IPAMService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
			log.Info("pool open to requests: NIC read and reconciled")
		case <-loopCtx.Done():
		}
	}()
	log.Info("cns serving", "socket", cfg.Socket, "listen", cfg.Listen, "metrics", cfg.MetricsListen)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	log.Info("cns shutting down")
	hs.Shutdown()
	for _, s := range servers {
		graceful(s, 5*time.Second)
	}
	if metricsSrv != nil {
		_ = metricsSrv.Close()
	}
	stopLoop()
	// The loop never outlives Serve: the caller closes the store once Serve returns. Its
	// write in flight is bounded by CloudTimeout; past that, say so and keep waiting.
	select {
	case <-loopDone:
	case <-time.After(cfg.Pool.CloudTimeout):
		log.Error("pool loop did not stop in time; waiting for it before closing the store")
		<-loopDone
	}
	_ = os.Remove(cfg.Socket)
	return runErr
}

func serveGRPC(s *grpc.Server, l net.Listener, name string) error {
	if err := s.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve %s: %w", name, err)
	}
	return nil
}

// graceful stops s, letting RPCs in flight finish for up to d.
func graceful(s *grpc.Server, d time.Duration) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		s.Stop()
	}
}

// listenUnix listens on path with mode 0600. The socket is bound in a fresh 0700 directory
// beside path, made 0600 there and only then renamed into place, so it is never reachable by
// others, not even between bind and chmod (bind creates it with the process umask, and
// changing the umask is process-wide, racing every other goroutine that creates files). An
// existing directory is tightened to no access for others and no group write, unless it is
// a shared sticky directory such as /tmp. A stale socket of an earlier run is replaced; any
// other file in the way is an error.
func listenUnix(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	} else if m := fi.Mode(); m&fs.ModeSticky == 0 && m.Perm()&0o027 != 0 {
		if err := os.Chmod(dir, m.Perm()&^0o027); err != nil {
			return nil, fmt.Errorf("tighten socket directory %s: %w", dir, err)
		}
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() != fs.ModeSocket {
		return nil, fmt.Errorf("%s exists and is not a socket", path)
	}
	tmp, err := os.MkdirTemp(dir, ".s") // 0700
	if err != nil {
		return nil, fmt.Errorf("socket staging directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	staged := filepath.Join(tmp, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: staged, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false) // it is unlinked by name (cfg.Socket) when Serve ends
	if err := os.Chmod(staged, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	if err := os.Rename(staged, path); err != nil { // replaces a stale socket atomically
		l.Close()
		return nil, fmt.Errorf("put socket in place at %s: %w", path, err)
	}
	return l, nil
}
