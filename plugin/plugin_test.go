package plugin_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/vnet-cni/vnet-cni/cns"
	"github.com/vnet-cni/vnet-cni/plugin"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
	"github.com/vnet-cni/vnet-cni/test/nettest"
	"github.com/vnet-cni/vnet-cni/test/stack"
)

// node is one emulated node: a network namespace with a primary address, running cns.
type node struct {
	t     *testing.T
	ns    ns.NetNS
	stack *stack.Stack
	p     *plugin.Plugin
	conf  []byte
	addr  netip.Addr
	spool string
}

func newNode(t *testing.T) *node { return newNodeWith(t, stack.Options{}) }

func newNodeWith(t *testing.T, o stack.Options) *node {
	nettest.RequireRoot(t)
	s := stack.Start(t, o)
	n := &node{t: t, ns: nettest.NewNS(t), stack: s, p: plugin.New(), addr: netip.MustParseAddr("10.240.0.4"),
		spool: filepath.Join(s.Dir, "spool")}
	n.conf = n.confWith("")
	// The node's primary address, on lo (this kernel has no dummy links): pods must reach it.
	err := n.ns.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: n.addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *node) confWith(extra string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"vnet","type":"vnet-cni","cnsSocket":%q,"releaseSpool":%q,"requestTimeout":"15s"%s}`,
		n.stack.Socket, n.spool, extra))
}

func (n *node) args(cid string, pod ns.NetNS, conf []byte) *skel.CmdArgs {
	path := ""
	if pod != nil {
		path = pod.Path()
	}
	return &skel.CmdArgs{ContainerID: cid, Netns: path, IfName: "eth0", StdinData: conf,
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + cid + ";K8S_POD_UID=uid-" + cid}
}

// add runs ADD inside the node namespace and returns the parsed result.
func (n *node) add(cid string, pod ns.NetNS) (*current.Result, error) {
	var res types.Result
	err := n.ns.Do(func(ns.NetNS) error {
		a := n.args(cid, pod, n.conf)
		var err error
		res, _, err = testutils.CmdAddWithArgs(a, func() error { return n.p.Funcs().Add(a) })
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (n *node) mustAdd(cid string, pod ns.NetNS) (*current.Result, netip.Addr) {
	n.t.Helper()
	r, err := n.add(cid, pod)
	if err != nil {
		n.t.Fatalf("ADD %s: %v", cid, err)
	}
	a, _ := netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
	return r, a
}

func (n *node) del(cid string, pod ns.NetNS) error {
	return n.ns.Do(func(ns.NetNS) error {
		a := n.args(cid, pod, n.conf)
		return testutils.CmdDelWithArgs(a, func() error { return n.p.Funcs().Del(a) })
	})
}

func (n *node) check(cid string, pod ns.NetNS, prev *current.Result) error {
	raw, _ := json.Marshal(prev)
	conf := n.confWith(`,"prevResult":` + string(raw))
	return n.ns.Do(func(ns.NetNS) error {
		a := n.args(cid, pod, conf)
		return testutils.CmdCheckWithArgs(a, func() error { return n.p.Funcs().Check(a) })
	})
}

func (n *node) allocations() []*cnsv1.Allocation { return n.stack.Allocations() }

func linkExists(n ns.NetNS, name string) bool {
	found := false
	_ = n.Do(func(ns.NetNS) error {
		_, err := netlink.LinkByName(name)
		found = err == nil
		return nil
	})
	return found
}

func cniCode(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

func TestAddBuildsTransparentDatapathAndPodsTalk(t *testing.T) {
	n := newNode(t)
	podA, podB := nettest.NewNS(t), nettest.NewNS(t)
	resA, ipA := n.mustAdd("pod-a", podA)
	_, ipB := n.mustAdd("pod-b", podB)

	if !netip.MustParsePrefix("10.240.0.0/16").Contains(ipA) || ipA == ipB {
		t.Fatalf("addresses %s and %s: want two distinct addresses of the VNet subnet", ipA, ipB)
	}
	if ones, _ := resA.IPs[0].Address.Mask.Size(); ones != 32 || !resA.IPs[0].Gateway.Equal(net.IPv4(169, 254, 1, 1)) {
		t.Fatalf("result address %v via %v, want /32 via 169.254.1.1", resA.IPs[0].Address, resA.IPs[0].Gateway)
	}
	if len(resA.Interfaces) != 2 || resA.Interfaces[1].Sandbox != podA.Path() || resA.Interfaces[0].Name != plugin.HostVethName("pod-a", "eth0") {
		t.Fatalf("result interfaces %+v", resA.Interfaces)
	}
	if err := n.check("pod-a", podA, resA); err != nil {
		t.Fatalf("CHECK right after ADD: %v", err)
	}
	for _, probe := range []struct {
		name string
		from ns.NetNS
		to   netip.Addr
	}{{"pod a to pod b", podA, ipB}, {"pod b to pod a", podB, ipA}, {"pod a to its node", podA, n.addr}, {"node to pod b", n.ns, ipB}} {
		if err := nettest.Ping(probe.from, probe.to, 3*time.Second); err != nil {
			t.Errorf("%s: %v", probe.name, err)
		}
	}
	l, err := nettest.Listen(podB, ":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	nettest.EchoSource(l)
	seen, err := nettest.SeenSource(podA, ipB.String()+":8080", 3*time.Second)
	if err != nil || seen != ipA.String() {
		t.Fatalf("TCP pod a -> pod b: server saw %q (%v), want %s", seen, err, ipA)
	}
	if got := n.allocations(); len(got) != 2 || got[0].GetPodName() == "" || got[0].GetPodUid() != "uid-"+got[0].GetContainerId() {
		t.Fatalf("cns allocations: %v", got)
	}
}

func TestDelRemovesEverythingAndIsIdempotent(t *testing.T) {
	n := newNode(t)
	pod := nettest.NewNS(t)
	n.mustAdd("pod", pod)
	host := plugin.HostVethName("pod", "eth0")
	for i := range 3 {
		if err := n.del("pod", pod); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	if linkExists(n.ns, host) || linkExists(pod, "eth0") {
		t.Fatal("veth left behind after DEL")
	}
	if got := n.allocations(); len(got) != 0 {
		t.Fatalf("allocation left after DEL: %v", got)
	}
	if err := n.del("pod", nil); err != nil {
		t.Fatalf("DEL without netns: %v", err)
	}
	gone := &fakeNS{path: "/var/run/netns/does-not-exist"}
	if err := n.del("pod", gone); err != nil {
		t.Fatalf("DEL with a vanished netns: %v", err)
	}
}

type fakeNS struct {
	ns.NetNS
	path string
}

func (f *fakeNS) Path() string { return f.path }

func TestCheckNamesWhatIsMissing(t *testing.T) {
	n := newNode(t)
	pod := nettest.NewNS(t)
	res, _ := n.mustAdd("pod", pod)
	err := pod.Do(func(ns.NetNS) error {
		return netlink.RouteDel(&netlink.Route{Dst: nil, Gw: net.IPv4(169, 254, 1, 1)})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = n.check("pod", pod, res)
	if err == nil || !strings.Contains(err.Error(), "default route via 169.254.1.1") {
		t.Fatalf("CHECK after deleting the default route: %v", err)
	}
}

func TestCheckFailsWhenCNSForgot(t *testing.T) {
	n := newNode(t)
	pod := nettest.NewNS(t)
	res, _ := n.mustAdd("pod", pod)
	n.stack.IPAM.ReleaseIPs(n.stack.Ctx(), &cnsv1.ReleaseIPsRequest{ContainerId: "pod", Ifname: "eth0"})
	if err := n.check("pod", pod, res); err == nil || !strings.Contains(err.Error(), "cns holds no address") {
		t.Fatalf("CHECK with the allocation released: %v", err)
	}
}

func TestGCReleasesUnlistedAttachments(t *testing.T) {
	n := newNode(t)
	keep, drop := nettest.NewNS(t), nettest.NewNS(t)
	n.mustAdd("keep", keep)
	n.mustAdd("drop", drop)
	conf := n.confWith(`,"cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]`)
	err := n.ns.Do(func(ns.NetNS) error {
		a := n.args("", nil, conf)
		return n.p.Funcs().GC(a)
	})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	got := n.allocations()
	if len(got) != 1 || got[0].GetContainerId() != "keep" {
		t.Fatalf("allocations after GC: %v", got)
	}
	if linkExists(n.ns, plugin.HostVethName("drop", "eth0")) || !linkExists(n.ns, plugin.HostVethName("keep", "eth0")) {
		t.Fatal("GC removed the wrong host veth")
	}
}

func TestAddRefusesExistingInterfaceWithoutAllocating(t *testing.T) {
	n := newNode(t)
	pod := nettest.NewNS(t)
	if err := pod.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "squat0"})
	}); err != nil {
		t.Fatal(err)
	}
	_, err := n.add("pod", pod)
	if cniCode(err) != types.ErrInvalidEnvironmentVariables || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("ADD onto an existing eth0: %v (code %d), want code 4", err, cniCode(err))
	}
	if got := n.allocations(); len(got) != 0 {
		t.Fatalf("refused ADD allocated: %v", got)
	}
}

func TestAddRollsBackAddressWhenDatapathFails(t *testing.T) {
	n := newNode(t)
	pod := nettest.NewNS(t)
	// A link squatting on the host veth name makes veth creation fail after the grant.
	if err := n.ns.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: plugin.HostVethName("pod", "eth0")}, PeerName: "squat0"})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.add("pod", pod); err == nil {
		t.Fatal("ADD succeeded over a squatted host veth name")
	}
	if got := n.allocations(); len(got) != 0 {
		t.Fatalf("failed ADD leaked its address: %v", got)
	}
	if linkExists(pod, "eth0") {
		t.Fatal("failed ADD left eth0 in the pod")
	}
}

func TestStatusFollowsCNS(t *testing.T) {
	n := newNode(t)
	status := func() error {
		a := n.args("", nil, n.conf)
		return n.p.Funcs().Status(a)
	}
	if err := status(); err != nil {
		t.Fatalf("STATUS with cns up: %v", err)
	}
	n.stack.StopCNS()
	if err := status(); cniCode(err) != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS with cns down: %v, want code 50", err)
	}
	n.stack.StartCNS()
	if err := status(); err != nil {
		t.Fatalf("STATUS after cns restart: %v", err)
	}
}

func TestDelWhileCNSDownIsSpooledAndReplayed(t *testing.T) {
	n := newNode(t)
	pod := nettest.NewNS(t)
	n.mustAdd("pod", pod)
	n.stack.StopCNS()
	if err := n.del("pod", pod); err != nil {
		t.Fatalf("DEL with cns down: %v, want success", err)
	}
	if linkExists(n.ns, plugin.HostVethName("pod", "eth0")) {
		t.Fatal("DEL with cns down left the datapath")
	}
	files, _ := os.ReadDir(n.spool)
	if len(files) != 1 {
		t.Fatalf("spool holds %d files, want 1", len(files))
	}
	n.stack.StartCNS()
	if got := n.allocations(); len(got) != 0 {
		t.Fatalf("spooled release not replayed on start: %v", got)
	}
	if files, _ := os.ReadDir(n.spool); len(files) != 0 {
		t.Fatalf("spool not emptied: %d files", len(files))
	}
}

func TestAddDuringCloudOutageSaysTryAgainLater(t *testing.T) {
	for _, tc := range []struct {
		name   string
		outage func(*stack.Stack)
		end    func(*stack.Stack)
	}{
		{"mockarm down", (*stack.Stack).MockDown, (*stack.Stack).MockUp},
		{"responses slower than the cloud deadline",
			func(s *stack.Stack) {
				s.Mock.Inject(mockarm.Fault{Op: "any", Delay: mockarm.Duration(3 * time.Second), Count: 1000})
			},
			func(s *stack.Stack) { s.Mock.ClearFaults() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNodeWith(t, stack.Options{Config: func(c *cns.Config) {
				// The wait outlasts the cloud's deadline, so the cloud has failed when it ends
				// (equal, the two raced: the refill starts a few ms before the ADD asks).
				c.Pool.RequestWait, c.Pool.CloudTimeout = 2*time.Second, time.Second
				c.Pool.Limits.BatchSize, c.Pool.Limits.MinFree, c.Pool.Limits.MaxFree = 2, 1, 4
			}})
			p := n.stack.WaitFor("warm", func(p *cnsv1.GetPoolResponse) bool { return p.GetCounts().GetAvailable() >= 1 })
			tc.outage(n.stack)
			for i := range int(p.GetCounts().GetAvailable()) { // the warm pool still serves
				if _, err := n.stack.Request(n.stack.Ctx(), fmt.Sprint("warm-", i)); err != nil {
					t.Fatalf("warm address during the outage: %v", err)
				}
			}
			pod := nettest.NewNS(t)
			_, err := n.add("starved", pod)
			if cniCode(err) != types.ErrTryAgainLater || !strings.Contains(err.Error(), "cloud API") {
				t.Fatalf("ADD on an empty pool during the outage: %v (code %d), want code 11 naming the cloud", err, cniCode(err))
			}
			if got := n.allocations(); len(got) != int(p.GetCounts().GetAvailable()) {
				t.Fatalf("failed ADD left an allocation: %v", got)
			}
			st := func() error { a := n.args("", nil, n.conf); return n.p.Funcs().Status(a) }
			if err := st(); cniCode(err) != types.ErrPluginNotAvailable {
				t.Fatalf("STATUS during the outage: %v, want 50", err)
			}
			tc.end(n.stack)
			n.stack.WaitFor("recovered", func(p *cnsv1.GetPoolResponse) bool { return p.GetCounts().GetAvailable() >= 1 })
			if _, err := n.add("starved", pod); err != nil {
				t.Fatalf("ADD after the outage: %v", err)
			}
			if err := st(); err != nil {
				t.Fatalf("STATUS after the outage: %v", err)
			}
		})
	}
}
