package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
	"github.com/vnet-cni/vnet-cni/test/nettest"
	"github.com/vnet-cni/vnet-cni/test/stack"
)

// proc is a daemon started from the built binaries, killed when the test ends.
type proc struct {
	t    *testing.T
	name string
	args []string
	log  string
	cmd  *exec.Cmd
}

func startProc(t *testing.T, dir, name string, args ...string) *proc {
	p := &proc{t: t, name: name, args: args, log: filepath.Join(dir, name+".log")}
	p.start()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) start() {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	p.cmd = exec.Command(filepath.Join(binDir, p.name), p.args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
}

// kill sends SIGKILL: no shutdown code runs, as in a crash or OOM kill.
func (p *proc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
	p.cmd = nil
}

// cnsClient dials a cns socket and waits until it has read the NIC.
func cnsClient(t *testing.T, socket, logPath string) (cnsv1grpc.IPAMServiceClient, cnsv1grpc.PoolServiceClient) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ipam := cnsv1grpc.NewIPAMServiceClient(conn)
	if err := stack.WaitCNSReady(ipam, 20*time.Second); err != nil {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("%v; its log:\n%s", err, b)
	}
	return ipam, cnsv1grpc.NewPoolServiceClient(conn)
}

func TestKill9KeepsAllocationsAndCooldowns(t *testing.T) {
	dir, err := os.MkdirTemp("", "vnet-kill9")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	armAddr, tcpAddr := nettest.FreeLoopbackAddr(t), nettest.FreeLoopbackAddr(t)
	socket := filepath.Join(dir, "cns.sock")
	mock := startProc(t, dir, "mockarm", "--static-token", "mock", "--listen", armAddr, "--state", filepath.Join(dir, "mockarm.json"))
	cnsArgs := []string{"--arm-endpoint", "http://" + armAddr, "--auth", "static", "--subscription", "00000000-0000-0000-0000-000000000000",
		"--resource-group", "vnet-rg", "--nic", "node0-nic", "--socket", socket, "--state", filepath.Join(dir, "cns.db"),
		"--release-spool", filepath.Join(dir, "spool"), "--listen", tcpAddr, "--metrics-listen", "", "--backoff-max", "1s"}
	cns := startProc(t, dir, "cns", cnsArgs...)
	ipam, pool := cnsClient(t, socket, cns.log)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	held := map[string]string{}
	for i := range 6 {
		id := fmt.Sprint("pod-", i)
		r, err := ipam.RequestIPs(ctx, &cnsv1.RequestIPsRequest{ContainerId: id, Ifname: "eth0"})
		if err != nil {
			t.Fatal(err)
		}
		held[id] = r.GetIpConfigs()[0].GetAddress()
	}
	for _, id := range []string{"pod-0", "pod-1"} {
		if _, err := ipam.ReleaseIPs(ctx, &cnsv1.ReleaseIPsRequest{ContainerId: id, Ifname: "eth0"}); err != nil {
			t.Fatal(err)
		}
		delete(held, id)
	}

	check := func(when string) {
		t.Helper()
		p, err := pool.GetPool(ctx, &cnsv1.GetPoolRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if p.GetCounts().GetAssigned() != 4 || p.GetCounts().GetCooldown() != 2 {
			t.Fatalf("%s: counts %v, want 4 assigned and 2 cooling down", when, p.GetCounts())
		}
		for id, addr := range held {
			r, err := ipam.RequestIPs(ctx, &cnsv1.RequestIPsRequest{ContainerId: id, Ifname: "eth0"})
			if err != nil || r.GetIpConfigs()[0].GetAddress() != addr {
				t.Fatalf("%s: %s got %v (%v), want %s", when, id, r.GetIpConfigs(), err, addr)
			}
		}
	}

	cns.kill()
	cns.start()
	ipam, pool = cnsClient(t, socket, cns.log)
	check("after kill -9 of cns")

	mock.kill()
	mock.start()
	cns.kill()
	cns.start()
	ipam, pool = cnsClient(t, socket, cns.log)
	check("after kill -9 of mockarm and cns")
	r, err := ipam.RequestIPs(ctx, &cnsv1.RequestIPsRequest{ContainerId: "fresh", Ifname: "eth0"})
	if err != nil {
		t.Fatalf("new request after both restarts: %v", err)
	}
	fresh := r.GetIpConfigs()[0].GetAddress()
	if _, err := netip.ParsePrefix(fresh); err != nil {
		t.Fatalf("fresh address %q: %v", fresh, err)
	}
	for id, addr := range held {
		if addr == fresh {
			t.Fatalf("fresh pod got %s, held by %s", fresh, id)
		}
	}
}

func TestSIGTERMDuringCloudWriteLosesNothing(t *testing.T) {
	dir, err := os.MkdirTemp("", "vnet-term")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	armAddr := nettest.FreeLoopbackAddr(t)
	socket := filepath.Join(dir, "cns.sock")
	startProc(t, dir, "mockarm", "--static-token", "mock", "--listen", armAddr, "--state", filepath.Join(dir, "mockarm.json"), "--latency", "2s")
	cns := startProc(t, dir, "cns", "--arm-endpoint", "http://"+armAddr, "--auth", "static", "--subscription", "00000000-0000-0000-0000-000000000000",
		"--resource-group", "vnet-rg", "--nic", "node0-nic", "--socket", socket, "--state", filepath.Join(dir, "cns.db"),
		"--release-spool", filepath.Join(dir, "spool"), "--listen", "", "--metrics-listen", "")
	_, pool := cnsClient(t, socket, cns.log)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for { // wait until the first scale-up is in flight
		p, err := pool.GetPool(ctx, &cnsv1.GetPoolRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if p.GetPendingOperation() != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	proc := cns.cmd
	if err := proc.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := proc.Wait(); err != nil {
		b, _ := os.ReadFile(cns.log)
		t.Fatalf("cns exit after SIGTERM: %v\n%s", err, b)
	}
	cns.cmd = nil
	// cns let the write finish before exiting: the scale-up is in its log, after the signal.
	logText, _ := os.ReadFile(cns.log)
	stop := strings.Index(string(logText), "cns shutting down")
	if stop < 0 || !strings.Contains(string(logText)[stop:], "scaled up") {
		t.Fatalf("cns exited without finishing its in-flight NIC write; log:\n%s", logText)
	}
	cns.start()
	_, pool = cnsClient(t, socket, cns.log)
	p, err := pool.GetPool(ctx, &cnsv1.GetPoolRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The write finished (cns let it) or is adopted from the NIC: 16 addresses, none pending.
	if c := p.GetCounts(); c.GetAvailable() != 16 || c.GetPending() != 0 {
		t.Fatalf("after SIGTERM mid-write and restart: %v", c)
	}
}
