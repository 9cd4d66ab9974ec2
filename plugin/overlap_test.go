package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vnet-cni/vnet-cni/plugin"
	"github.com/vnet-cni/vnet-cni/plugin/cnswire"
	"github.com/vnet-cni/vnet-cni/test/nettest"
)

// interposedCNS is the node's real cns with RequestIPs replaced, and the releases counted.
type interposedCNS struct {
	plugin.CNS
	request  func(ctx context.Context, req cnswire.IPRequest) (cnswire.Grant, error)
	releases *atomic.Int32
}

func (c *interposedCNS) RequestIPs(ctx context.Context, req cnswire.IPRequest) (cnswire.Grant, error) {
	return c.request(ctx, req)
}

func (c *interposedCNS) ReleaseIPs(ctx context.Context, network, containerID, ifname string) error {
	c.releases.Add(1)
	return c.CNS.ReleaseIPs(ctx, network, containerID, ifname)
}

// interpose makes the node's plugin reach cns through request, which receives the real cns.
func (n *node) interpose(request func(ctx context.Context, real plugin.CNS, req cnswire.IPRequest) (cnswire.Grant, error)) *atomic.Int32 {
	releases := new(atomic.Int32)
	n.p.Dial = func(c *plugin.Config) (plugin.CNS, error) {
		real, err := plugin.DialCNS(c)
		if err != nil {
			return nil, err
		}
		return &interposedCNS{CNS: real, releases: releases,
			request: func(ctx context.Context, req cnswire.IPRequest) (cnswire.Grant, error) {
				return request(ctx, real, req)
			}}, nil
	}
	return releases
}

// waitForLink polls the node namespace until name exists or the deadline passes.
func (n *node) waitForLink(name string, within time.Duration) bool {
	h, err := netlink.NewHandleAt(netns.NsHandle(int(n.ns.Fd())), unix.NETLINK_ROUTE)
	if err != nil {
		return false
	}
	defer h.Close()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, err := h.LinkByName(name); err == nil {
			return true
		}
	}
	return false
}

func TestAddBuildsVethWhileCNSAnswersAndRemovesItWhenCNSRefuses(t *testing.T) {
	n := newNode(t)
	pod := nettest.NewNS(t)
	host := plugin.HostVethName("pod", "eth0")
	var sawVeth atomic.Bool
	releases := n.interpose(func(context.Context, plugin.CNS, cnswire.IPRequest) (cnswire.Grant, error) {
		// The veth is address-independent: ADD builds it while cns works on the request.
		sawVeth.Store(n.waitForLink(host, 5*time.Second))
		return cnswire.Grant{}, errors.New("injected: cns refuses the request")
	})
	if _, err := n.add("pod", pod); err == nil {
		t.Fatal("ADD succeeded although cns refused the address")
	}
	if !sawVeth.Load() {
		t.Error("the host veth did not appear while cns was asked: ADD waits for the address before building")
	}
	if linkExists(n.ns, host) || linkExists(pod, "eth0") {
		t.Fatal("ADD refused by cns left its veth behind")
	}
	if got := releases.Load(); got != 0 {
		t.Fatalf("ADD released %d addresses it never got", got)
	}
	if got := n.allocations(); len(got) != 0 {
		t.Fatalf("allocations after a refused ADD: %v", got)
	}
}

func TestAddReleasesGrantWhenDatapathFailsAfterIt(t *testing.T) {
	n := newNode(t)
	pod := nettest.NewNS(t)
	releases := n.interpose(func(ctx context.Context, real plugin.CNS, req cnswire.IPRequest) (cnswire.Grant, error) {
		resp, err := real.RequestIPs(ctx, req)
		if err != nil {
			return resp, err
		}
		// A route listed twice: the kernel refuses the second, after the address was granted.
		c := &resp.IPConfigs[0]
		c.Routes = append(c.Routes, c.Routes...)
		return resp, nil
	})
	if _, err := n.add("pod", pod); err == nil {
		t.Fatal("ADD succeeded with a route the kernel refuses")
	}
	if got := releases.Load(); got != 1 {
		t.Fatalf("ADD released %d times, want once", got)
	}
	if got := n.allocations(); len(got) != 0 {
		t.Fatalf("failed ADD leaked its address: %v", got)
	}
	if linkExists(n.ns, plugin.HostVethName("pod", "eth0")) || linkExists(pod, "eth0") {
		t.Fatal("failed ADD left its veth behind")
	}
}

func TestConcurrentAddsOfDifferentPodsAllSucceed(t *testing.T) {
	n := newNode(t)
	const pods = 8
	errs := make([]error, pods)
	// The handlers print their results; testutils' capture of stdout is not safe to run
	// concurrently, so the results go nowhere and cns and the kernel are checked instead.
	stdout := os.Stdout
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	os.Stdout = devnull
	var wg sync.WaitGroup
	for i := range pods {
		pod := nettest.NewNS(t)
		wg.Go(func() {
			errs[i] = n.ns.Do(func(ns.NetNS) error { return n.p.Funcs().Add(n.args(fmt.Sprint("pod-", i), pod, n.conf)) })
		})
	}
	wg.Wait()
	os.Stdout = stdout
	for i, err := range errs {
		if err != nil {
			t.Errorf("ADD pod-%d: %v", i, err)
		}
	}
	got := n.allocations()
	if len(got) != pods {
		t.Fatalf("cns holds %d allocations, want %d: %v", len(got), pods, got)
	}
	seen := map[string]bool{}
	for _, a := range got {
		if seen[a.GetAddress()] {
			t.Fatalf("address %s granted twice", a.GetAddress())
		}
		seen[a.GetAddress()] = true
		if !linkExists(n.ns, plugin.HostVethName(a.GetContainerId(), "eth0")) {
			t.Errorf("no host veth for %s", a.GetContainerId())
		}
		if err := nettest.Ping(n.ns, netip.MustParseAddr(a.GetAddress()), 3*time.Second); err != nil {
			t.Errorf("node -> %s: %v", a.GetContainerId(), err)
		}
	}
}

// dialThen makes the node's plugin run before(...) once it has passed its pre-checks (the
// dial comes after them), then reach the real cns with releases counted.
func (n *node) dialThen(before func()) *atomic.Int32 {
	releases := new(atomic.Int32)
	var once sync.Once
	n.p.Dial = func(c *plugin.Config) (plugin.CNS, error) {
		once.Do(before)
		real, err := plugin.DialCNS(c)
		if err != nil {
			return nil, err
		}
		return &interposedCNS{CNS: real, releases: releases, request: real.RequestIPs}, nil
	}
	return releases
}

// Two ADDs of one key at once: the one that loses the race to create the veth must not
// release the grant, which cns gave the winner too (one key, one answer).
func TestConcurrentAddOfTheSameKeyLeavesTheWinnerAlone(t *testing.T) {
	n := newNode(t)
	pod := nettest.NewNS(t)
	var addr netip.Addr
	releases := n.dialThen(func() {
		// The winner runs whole between the loser's pre-checks and its veth creation.
		winner := &node{t: t, ns: n.ns, stack: n.stack, p: plugin.New(), addr: n.addr, spool: n.spool, conf: n.conf}
		_, addr = winner.mustAdd("same", pod)
	})
	_, err := n.add("same", pod)
	if cniCode(err) != types.ErrInvalidEnvironmentVariables {
		t.Fatalf("the losing ADD: %v (code %d), want code 4", err, cniCode(err))
	}
	if got := releases.Load(); got != 0 {
		t.Fatalf("the losing ADD released %d times: the winner's address would go to another pod", got)
	}
	n.alive(t, "same", pod, addr)
}

// The pod's interface name taken, between the pre-checks and the veth, by another
// attachment: the grant is this ADD's alone, so the failed ADD releases it.
func TestAddLosingItsInterfaceNameToAnotherAttachmentReleasesItsGrant(t *testing.T) {
	n := newNode(t)
	pod := nettest.NewNS(t)
	releases := n.dialThen(func() {
		err := pod.Do(func(ns.NetNS) error {
			return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "other0"})
		})
		if err != nil {
			t.Error(err)
		}
	})
	_, err := n.add("late", pod)
	if cniCode(err) != types.ErrInvalidEnvironmentVariables {
		t.Fatalf("ADD over a taken eth0: %v (code %d), want code 4", err, cniCode(err))
	}
	if got := releases.Load(); got != 1 {
		t.Fatalf("ADD released %d times, want once", got)
	}
	if got := n.allocations(); len(got) != 0 {
		t.Fatalf("failed ADD kept its address: %v", got)
	}
	if !linkExists(pod, "eth0") || !linkExists(pod, "other0") {
		t.Fatal("failed ADD deleted the other attachment's interface")
	}
}

// A DEL of a key that has no host veth leaves a pod interface that is another attachment's.
func TestDelOfAnotherKeyLeavesThePodsInterface(t *testing.T) {
	n := newNode(t)
	pod := nettest.NewNS(t)
	_, addr := n.mustAdd("live", pod)
	if err := n.del("never-added", pod); err != nil {
		t.Fatalf("DEL of an unknown key: %v", err)
	}
	n.alive(t, "live", pod, addr)
}
