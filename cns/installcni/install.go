package installcni

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
)

// Config is what to install where, and how to reach cns.
type Config struct {
	Health   string // cns's loopback gRPC address (health service)
	Plugin   string // the vnet-cni binary to install
	BinDir   string // CNI bin directory (host's /opt/cni/bin)
	Conflist string // the conflist to install
	ConfDir  string // CNI conf directory (host's /etc/cni/net.d)
	Hold     bool   // after installing, stay up until stopped (a DaemonSet container)
	Probe    bool   // only check health once: exit status is the answer
	Alive    bool   // with Probe: any answer from cns is success (liveness, not readiness)
	Interval time.Duration
	Timeout  time.Duration // deadline of one health call
}

// RegisterFlags binds c to fs with the DaemonSet's defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Health, "health", "127.0.0.1:10090", "cns's loopback gRPC address")
	fs.StringVar(&c.Plugin, "plugin", "/vnet-cni", "vnet-cni binary to install")
	fs.StringVar(&c.BinDir, "bin-dir", "/host/opt/cni/bin", "CNI bin directory")
	fs.StringVar(&c.Conflist, "conflist", "/10-vnet.conflist", "conflist to install")
	fs.StringVar(&c.ConfDir, "conf-dir", "/host/etc/cni/net.d", "CNI conf directory")
	fs.BoolVar(&c.Hold, "hold", false, "after installing, stay up until SIGTERM (DaemonSet container)")
	fs.BoolVar(&c.Probe, "probe", false, "check cns health once and exit 0 when SERVING (a kubelet exec probe)")
	fs.BoolVar(&c.Alive, "alive", false, "with --probe: succeed on any answer from cns (liveness)")
	fs.DurationVar(&c.Interval, "interval", 500*time.Millisecond, "health poll interval")
	fs.DurationVar(&c.Timeout, "timeout", 2*time.Second, "deadline of one health call")
}

// Run probes, or waits for SERVING and installs.
func Run(ctx context.Context, c Config, log *slog.Logger) error {
	conn, err := grpc.NewClient("passthrough:///"+c.Health, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("cns health client: %w", err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	if c.Probe {
		st, err := check(ctx, hc, c.Timeout)
		if err != nil {
			return err
		}
		if !c.Alive && st != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("cns health %s: %s", cnsv1grpc.IPAMService_ServiceDesc.ServiceName, st)
		}
		return nil
	}
	if err := waitServing(ctx, hc, c, log); err != nil {
		return err
	}
	if err := installFile(c.Plugin, filepath.Join(c.BinDir, filepath.Base(c.Plugin)), 0o755); err != nil {
		return err
	}
	if err := installFile(c.Conflist, filepath.Join(c.ConfDir, filepath.Base(c.Conflist)), 0o644); err != nil {
		return err
	}
	log.Info("installed the CNI plugin and its conflist: cns is serving", "binDir", c.BinDir, "confDir", c.ConfDir)
	if c.Hold {
		<-ctx.Done()
	}
	return nil
}

func check(ctx context.Context, hc healthpb.HealthClient, timeout time.Duration) (healthpb.HealthCheckResponse_ServingStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: cnsv1grpc.IPAMService_ServiceDesc.ServiceName})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN, fmt.Errorf("cns health check: %w", err)
	}
	return r.GetStatus(), nil
}

func waitServing(ctx context.Context, hc healthpb.HealthClient, c Config, log *slog.Logger) error {
	var last string
	for {
		st, err := check(ctx, hc, c.Timeout)
		if err == nil && st == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		now := st.String()
		if err != nil {
			now = err.Error()
		}
		if now != last {
			log.Info("waiting for cns to serve before installing the CNI config", "health", now)
			last = now
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped before cns was serving (last: %s): %w", last, ctx.Err())
		case <-time.After(c.Interval):
		}
	}
}

// installFile copies src to dst through a temporary file in dst's directory and a rename, so
// a reader (kubelet, the runtime) sees the old file or the whole new one, never a part.
func installFile(src, dst string, mode os.FileMode) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-")
	if err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	_, err = io.Copy(tmp, in)
	err = errors.Join(err, tmp.Chmod(mode), tmp.Sync(), tmp.Close())
	if err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	return nil
}
