package vnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
	"github.com/vnet-cni/vnet-cni/test/nettest"
)

// DemoPrefix names the demo's namespaces, so demo-down finds them.
const DemoPrefix = "vdemo"

// DemoConfig is the demo's command line.
type DemoConfig struct {
	Prefix  string // namespace prefix; default DemoPrefix
	BinDir  string
	WorkDir string
	Down    bool // tear down a running or crashed demo instead
	Wait    bool // stay up until ctx ends (Ctrl-C); false tears down at once
}

// RunDemo builds a 2-node VNet with 2 pods per node, tells its story on w, then waits for
// ctx and tears down.
func RunDemo(ctx context.Context, w io.Writer, c DemoConfig) (err error) {
	if c.Prefix == "" {
		c.Prefix = DemoPrefix
	}
	if c.Down {
		return DemoDown(c.WorkDir, c.Prefix)
	}
	if err := DemoDown(c.WorkDir, c.Prefix); err != nil { // leftovers of an earlier demo
		return err
	}
	start := time.Now()
	if err := os.MkdirAll(c.WorkDir, 0o755); err != nil {
		return err
	}
	_ = os.WriteFile(filepath.Join(c.WorkDir, "demo.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	v, err := New(Options{Prefix: c.Prefix, Nodes: 2, ScaleSetNodes: 1, BinDir: c.BinDir, WorkDir: c.WorkDir,
		CNSArgs: []string{"--listen", "", "--metrics-listen", ""}})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(w, "tearing down: cns processes, namespaces, veths")
		err = errors.Join(err, v.Close())
		os.Remove(filepath.Join(c.WorkDir, "demo.pid"))
	}()
	fmt.Fprintf(w, "VNet %s, gateway %s (mockarm serves ARM there, in namespace %s-vnet)\n", v.MockCfg.Subnet, v.Gateway, c.Prefix)
	fmt.Fprintf(w, "every node runs the same command: cns %s\n  (no subscription, resource group or NIC: IMDS on %s says who the node is, its managed identity gets the token)\n",
		strings.Join(v.Nodes[0].Args, " "), mockarm.IMDSAddr)
	var pods []*Pod
	for _, n := range v.Nodes {
		shape := "standalone VM " + n.Name
		if n.ScaleSet != "" {
			shape = "scale-set VM " + n.ScaleSet + "/" + n.Instance
		}
		fmt.Fprintf(w, "  %s  primary %-12s NIC %s (%s)  namespace %s-%s\n", n.Name, n.Primary, n.NIC, shape, c.Prefix, n.Name)
		for _, name := range []string{"web", "client"} {
			p, err := n.AddPod(ctx, name)
			if err != nil {
				return err
			}
			pods = append(pods, p)
			fmt.Fprintf(w, "    pod %-7s %-12s (namespace %s)\n", name, p.IP, p.ns)
		}
	}
	client, server := pods[1], pods[2] // node1/client -> node2/web
	l, err := nettest.Listen(server.NS, server.IP.String()+":8080")
	if err != nil {
		return err
	}
	defer l.Close()
	nettest.EchoSource(l)
	seen, err := nettest.SeenSource(client.NS, server.IP.String()+":8080", 5*time.Second)
	if err != nil {
		return fmt.Errorf("cross-node request: %w", err)
	}
	verdict := "the client's own pod address: no NAT"
	if seen != client.IP.String() {
		verdict = "NOT the client's address: something rewrote it"
	}
	fmt.Fprintf(w, "\ncross-node TCP: %s/%s (%s) -> %s/%s (%s:8080)\n  server saw source %s = %s\n",
		client.Node.Name, client.Name, client.IP, server.Node.Name, server.Name, server.IP, seen, verdict)
	routes, _ := v.FabricRoutes()
	fmt.Fprintf(w, "  VNet route for %s: via %s (%s's primary, programmed from its NIC)\n\n", server.IP, routes[server.IP], server.Node.Name)
	for _, n := range v.Nodes {
		p, err := n.Pool.GetPool(ctx, &cnsv1.GetPoolRequest{})
		if err != nil {
			return err
		}
		c := p.GetCounts()
		fmt.Fprintf(w, "pool %s: %d assigned, %d available, %d cooling down; %d NIC writes (watermarks %d..%d)\n",
			n.Name, c.GetAssigned(), c.GetAvailable(), c.GetCooldown(), p.GetNicWrites(), p.GetLimits().GetMinFree(), p.GetLimits().GetMaxFree())
	}
	fmt.Fprintf(w, "\nready in %s. Try: ip netns exec %s ping -c1 %s\n", time.Since(start).Round(time.Millisecond), client.ns, server.IP)
	if !c.Wait {
		return nil
	}
	fmt.Fprintln(w, "Ctrl-C (or make demo-down) tears it all down.")
	<-ctx.Done()
	return nil
}

// DemoDown stops a running demo (SIGTERM, it cleans up after itself), then removes whatever
// a crashed one left: cns processes and namespaces.
func DemoDown(workDir, prefix string) error {
	if pid, ok := readPid(filepath.Join(workDir, "demo.pid")); ok && pid != os.Getpid() && processAlive(pid) {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		for deadline := time.Now().Add(15 * time.Second); processAlive(pid) && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
	}
	pids, _ := filepath.Glob(filepath.Join(workDir, "node*", "cns.pid"))
	for _, f := range pids {
		if pid, ok := readPid(f); ok && processAlive(pid) && isCNS(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		os.Remove(f)
	}
	return SweepPrefix(prefix + "-")
}

func readPid(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, err == nil && pid > 0
}

// isCNS guards against killing an unrelated process that reused a stale pid.
func isCNS(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), "cns")
}
