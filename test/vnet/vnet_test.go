package vnet_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	"github.com/vnet-cni/vnet-cni/test/nettest"
	"github.com/vnet-cni/vnet-cni/test/stack"
	"github.com/vnet-cni/vnet-cni/test/vnet"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vnet-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/vnet-cni/vnet-cni/cmd/cns", "github.com/vnet-cni/vnet-cni/cmd/vnet-cni")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	binDir = dir
	if os.Geteuid() == 0 {
		_ = vnet.SweepStale() // namespaces of earlier runs that were killed
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func start(t *testing.T, tag string, nodes int, cnsArgs ...string) *vnet.VNet {
	t.Helper()
	nettest.RequireRoot(t)
	v, err := vnet.New(vnet.Options{Prefix: vnet.TestPrefix(tag), Nodes: nodes, BinDir: binDir, WorkDir: t.TempDir(), CNSArgs: cnsArgs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := v.Close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	return v
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func addPod(t *testing.T, n *vnet.Node, name string) *vnet.Pod {
	t.Helper()
	p, err := n.AddPod(ctx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// seen checks TCP from client to a server in server's pod: the server must see the client
// pod's own address, i.e. no NAT anywhere on the path.
func seen(t *testing.T, client, server *vnet.Pod, port int) {
	t.Helper()
	l, err := nettest.Listen(server.NS, fmt.Sprintf("%s:%d", server.IP, port))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	nettest.EchoSource(l)
	src, err := nettest.SeenSource(client.NS, fmt.Sprintf("%s:%d", server.IP, port), 3*time.Second)
	if err != nil || src != client.IP.String() {
		t.Fatalf("%s/%s -> %s/%s: server saw %q (%v), want %s", client.Node.Name, client.Name, server.Node.Name, server.Name, src, err, client.IP)
	}
}

func TestPodsTalkAcrossTheVNetWithoutNAT(t *testing.T) {
	v := start(t, "conn", 2)
	n1, n2 := v.Nodes[0], v.Nodes[1]
	a, b := addPod(t, n1, "a"), addPod(t, n1, "b")
	c := addPod(t, n2, "c")
	subnet := v.MockCfg.Subnet
	for _, p := range []*vnet.Pod{a, b, c} {
		if !subnet.Contains(p.IP) {
			t.Fatalf("pod %s got %s outside the VNet subnet %s", p.Name, p.IP, subnet)
		}
	}

	t.Run("same node", func(t *testing.T) {
		for _, pr := range [][2]*vnet.Pod{{a, b}, {b, a}} {
			if err := nettest.Ping(pr[0].NS, pr[1].IP, 3*time.Second); err != nil {
				t.Error(err)
			}
		}
		seen(t, a, b, 7001)
		if err := nettest.Ping(a.NS, n1.Primary, 3*time.Second); err != nil {
			t.Errorf("pod -> its node: %v", err)
		}
		if err := nettest.Ping(n1.NS, a.IP, 3*time.Second); err != nil {
			t.Errorf("node -> its pod: %v", err)
		}
	})
	t.Run("cross node", func(t *testing.T) {
		seen(t, a, c, 7002)
		seen(t, c, a, 7003)
		if err := nettest.Ping(a.NS, n2.Primary, 3*time.Second); err != nil {
			t.Errorf("pod -> other node: %v", err)
		}
		if err := nettest.Ping(n2.NS, a.IP, 3*time.Second); err != nil {
			t.Errorf("node -> other node's pod: %v", err)
		}
		routes, err := v.FabricRoutes()
		if err != nil {
			t.Fatal(err)
		}
		if routes[a.IP] != n1.Primary || routes[c.IP] != n2.Primary {
			t.Fatalf("fabric routes %v: want %s via %s and %s via %s", routes, a.IP, n1.Primary, c.IP, n2.Primary)
		}
	})
	t.Run("node restart keeps connectivity", func(t *testing.T) {
		if err := n1.StopCNS(); err != nil {
			t.Fatal(err)
		}
		seen(t, c, a, 7004) // the datapath does not depend on cns running
		if err := n1.StartCNS(); err != nil {
			t.Fatal(err)
		}
		seen(t, a, c, 7005)
		seen(t, c, b, 7006)
		r, err := n1.Pool.ListAllocations(ctx(t), &cnsv1.ListAllocationsRequest{})
		if err != nil || len(r.GetAllocations()) != 2 {
			t.Fatalf("allocations on node1 after restart: %v %v", r, err)
		}
		d := addPod(t, n1, "d")
		seen(t, d, c, 7007)
	})
}

func TestTwoNodesThirtyPodsScaleUpAndDown(t *testing.T) {
	// Short cooldown and release delay so scale-down happens within the test.
	v := start(t, "scale", 2, "--cooldown", "500ms", "--release-delay", "1s", "--reconcile-interval", "1s")
	pods := make([][]*vnet.Pod, len(v.Nodes))
	var mu sync.Mutex
	var wg sync.WaitGroup
	errc := make(chan error, 60)
	for i, n := range v.Nodes {
		for j := range 30 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := n.AddPod(ctx(t), fmt.Sprint("p", j))
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				pods[i] = append(pods[i], p)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	owner := map[netip.Addr]string{}
	for i, n := range v.Nodes {
		p := waitPool(t, n, "settled after 30 pods", func(c *cnsv1.PoolCounts) bool {
			return c.GetAssigned() == 30 && c.GetPending() == 0 && c.GetAvailable() >= 8
		})
		if p.GetNicWrites() < 2 {
			t.Fatalf("%s: 30 pods from a warm pool of 16 took %d NIC writes", n.Name, p.GetNicWrites())
		}
		for _, pod := range pods[i] {
			if prev, dup := owner[pod.IP]; dup {
				t.Fatalf("%s held by %s and %s/%s", pod.IP, prev, n.Name, pod.Name)
			}
			owner[pod.IP] = n.Name + "/" + pod.Name
		}
	}
	if err := nettest.Ping(pods[0][29].NS, pods[1][29].IP, 3*time.Second); err != nil {
		t.Fatalf("cross-node after scale-up: %v", err)
	}

	var released []netip.Addr
	for i := range v.Nodes {
		for _, p := range pods[i][:25] {
			if err := p.Delete(ctx(t)); err != nil {
				t.Fatal(err)
			}
			released = append(released, p.IP)
		}
	}
	// Within the watermarks (8..24 free) after the release delay, on both nodes.
	for _, n := range v.Nodes {
		waitPool(t, n, "shrunk into its watermarks", func(c *cnsv1.PoolCounts) bool {
			return c.GetAssigned() == 5 && c.GetCooldown() == 0 && c.GetAvailable() >= 8 && c.GetAvailable() <= 24 &&
				c.GetPendingRelease() == 0 && c.GetPending() == 0
		})
	}
	routes, err := v.FabricRoutes()
	if err != nil {
		t.Fatal(err)
	}
	onNICs := 0
	for _, n := range v.Nodes {
		a, _ := v.Mock.NICAddrs(v.MockCfg.Subscription, v.MockCfg.ResourceGroup, n.NIC)
		onNICs += len(a)
		for _, addr := range a {
			if routes[addr] != n.Primary {
				t.Fatalf("NIC address %s of %s has fabric route via %s", addr, n.Name, routes[addr])
			}
		}
	}
	if len(routes) != onNICs {
		t.Fatalf("%d fabric routes for %d NIC addresses: released addresses kept their routes", len(routes), onNICs)
	}
	gone := 0
	for _, a := range released {
		if !onAnyNIC(v, a) {
			gone++
			if gw, ok := routes[a]; ok {
				t.Fatalf("released %s left every NIC but still routes via %s", a, gw)
			}
		}
	}
	if gone == 0 {
		t.Fatal("scale-down removed none of the 50 released addresses from the NICs")
	}
	if err := nettest.Ping(pods[0][29].NS, pods[1][29].IP, 3*time.Second); err != nil {
		t.Fatalf("cross-node after scale-down: %v", err)
	}
}

func onAnyNIC(v *vnet.VNet, a netip.Addr) bool {
	for _, n := range v.Nodes {
		addrs, _ := v.Mock.NICAddrs(v.MockCfg.Subscription, v.MockCfg.ResourceGroup, n.NIC)
		if slices.Contains(addrs, a) {
			return true
		}
	}
	return false
}

// waitPool polls a node's pool until cond holds, failing after 30 s.
func waitPool(t *testing.T, n *vnet.Node, what string, cond func(*cnsv1.PoolCounts) bool) *cnsv1.GetPoolResponse {
	t.Helper()
	p, err := stack.PollPool(n.Pool, 30*time.Second, func(p *cnsv1.GetPoolResponse) bool { return cond(p.GetCounts()) })
	if err != nil {
		t.Fatalf("%s: pool not %s: %v", n.Name, what, err)
	}
	return p
}

func TestDemoTellsTheCrossNodeStory(t *testing.T) {
	nettest.RequireRoot(t)
	var out strings.Builder
	err := vnet.RunDemo(ctx(t), &out, vnet.DemoConfig{Prefix: vnet.TestPrefix("demo"), BinDir: binDir, WorkDir: t.TempDir()})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"the client's own pod address: no NAT", "pool node1: 2 assigned", "pool node2: 2 assigned", "tearing down"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestCorruptStateIsRebuiltFromDatapath(t *testing.T) {
	t.Run("state file", func(t *testing.T) {
		rebuiltFromDatapath(t, "corrupt", func(n *vnet.Node) {
			if err := n.StopCNS(); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(filepath.Join(n.Dir, "cns.db"), 100); err != nil { // a torn write: the file is unreadable
				t.Fatal(err)
			}
		})
	})
	t.Run("state deleted", func(t *testing.T) {
		rebuiltFromDatapath(t, "nostate", func(n *vnet.Node) {
			if err := n.StopCNS(); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"cns.db", "cns.db.wal"} { // an operator's rm, a new disk
				if err := os.Remove(filepath.Join(n.Dir, f)); err != nil {
					t.Fatal(err)
				}
			}
		})
	})
	t.Run("change log", func(t *testing.T) {
		rebuiltFromDatapath(t, "corruptlog", func(n *vnet.Node) {
			n.KillCNS() // the log keeps the commits since the last checkpoint
			path := filepath.Join(n.Dir, "cns.db.wal")
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// Past the log's header and the first record's (8 bytes each): a byte of the first
			// record's changes, with the records of both pods after it (then the log's zeros).
			if n := len(bytes.TrimRight(b, "\x00")); n < 200 {
				t.Fatalf("log of %d bytes before its zeros: want the two pods' records", n)
			}
			b[8+8+2] ^= 0xff
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		})
	})
}

// rebuiltFromDatapath runs two pods on a node, damages its state with damage (which stops
// cns), and checks that cns rebuilds both allocations from the datapath and says so.
func rebuiltFromDatapath(t *testing.T, name string, damage func(n *vnet.Node)) {
	v := start(t, name, 1)
	n := v.Nodes[0]
	a, b := addPod(t, n, "a"), addPod(t, n, "b")
	damage(n)
	if err := n.StartCNS(); err != nil {
		t.Fatal(err)
	}
	log, _ := os.ReadFile(filepath.Join(n.Dir, "cns.log"))
	if !strings.Contains(string(log), "STATE REBUILT") {
		t.Fatalf("cns did not say loudly that it rebuilt its state:\n%s", log)
	}
	r, err := n.Pool.ListAllocations(ctx(t), &cnsv1.ListAllocationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, al := range r.GetAllocations() {
		got[al.GetContainerId()] = al.GetAddress()
	}
	for _, p := range []*vnet.Pod{a, b} {
		if got[p.ContainerID()] != p.IP.String() {
			t.Fatalf("pod %s (%s) not recovered: allocations %v", p.Name, p.IP, got)
		}
	}
	c := addPod(t, n, "c")
	if c.IP == a.IP || c.IP == b.IP {
		t.Fatalf("new pod got %s, held by a live pod", c.IP)
	}
	if err := nettest.Ping(c.NS, a.IP, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx(t)); err != nil { // recovered allocations release normally
		t.Fatal(err)
	}
}
