package plugin_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	"github.com/vnet-cni/vnet-cni/plugin"
	"github.com/vnet-cni/vnet-cni/test/nettest"
)

// addWith runs ADD with conf and container ID cid.
func (n *node) addWith(cid string, pod ns.NetNS, conf []byte) (*current.Result, error) {
	var res types.Result
	err := n.ns.Do(func(ns.NetNS) error {
		a := n.args(cid, pod, conf)
		var err error
		res, _, err = testutils.CmdAddWithArgs(a, func() error { return n.p.Funcs().Add(a) })
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (n *node) delWith(a *skel.CmdArgs) error {
	return n.ns.Do(func(ns.NetNS) error {
		return testutils.CmdDelWithArgs(a, func() error { return n.p.Funcs().Del(a) })
	})
}

// alive fails the test unless pod still holds addr in cns and on its datapath.
func (n *node) alive(t *testing.T, cid string, pod ns.NetNS, addr netip.Addr) {
	t.Helper()
	got := n.allocations()
	if len(got) != 1 || got[0].GetContainerId() != cid || got[0].GetAddress() != addr.String() {
		t.Fatalf("cns allocations %v, want only %s holding %s", got, cid, addr)
	}
	if !linkExists(n.ns, plugin.HostVethName(cid, "eth0")) || !linkExists(pod, "eth0") {
		t.Fatalf("live pod %s lost its datapath", cid)
	}
	if err := nettest.Ping(n.ns, addr, 3*time.Second); err != nil {
		t.Fatalf("node -> live pod %s: %v", addr, err)
	}
}

func TestAddOverAnotherSandboxesKeyLeavesLivePodAlone(t *testing.T) {
	n := newNode(t)
	live, intruder := nettest.NewNS(t), nettest.NewNS(t)
	_, addr := n.mustAdd("same-id", live)
	// Same container ID and ifname, another netns: cns's RequestIPs is idempotent per key,
	// so without a check the intruder gets the live pod's address and its failed ADD's
	// rollback tears the live pod down.
	_, err := n.add("same-id", intruder)
	if cniCode(err) != types.ErrInvalidEnvironmentVariables {
		t.Fatalf("ADD of a key held by another netns: %v (code %d), want code 4", err, cniCode(err))
	}
	n.alive(t, "same-id", live, addr)
	if linkExists(intruder, "eth0") {
		t.Fatal("refused ADD left eth0 in the intruding netns")
	}
}

func TestAddRefusesIDsTheHostVethLabelCannotHold(t *testing.T) {
	n := newNode(t)
	for _, tc := range []struct{ name, cid string }{
		{"slash in container ID", "ns/pod"},
		{"container ID too long for the 255-byte alias", strings.Repeat("c", 200)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := n.add(tc.cid, nettest.NewNS(t))
			if cniCode(err) != types.ErrInvalidEnvironmentVariables {
				t.Fatalf("ADD: %v (code %d), want code 4", err, cniCode(err))
			}
			if got := n.allocations(); len(got) != 0 {
				t.Fatalf("refused ADD allocated: %v", got)
			}
		})
	}
	long := n.confWith("")
	long = []byte(strings.Replace(string(long), `"name":"vnet"`, `"name":"`+strings.Repeat("n", 120)+`"`, 1))
	if _, err := n.addWith("pod", nettest.NewNS(t), long); cniCode(err) != types.ErrInvalidNetworkConfig {
		t.Fatalf("ADD with a 120-byte network name: %v (code %d), want code 7", err, cniCode(err))
	}
}

func TestDelSucceedsOnConfigWithUnknownField(t *testing.T) {
	n := newNode(t)
	pod := nettest.NewNS(t)
	n.mustAdd("pod", pod)
	// The conflist was upgraded between ADD and DEL: a field this plugin does not know.
	upgraded := n.confWith(`,"futureKnob":{"x":1},"mtu":70000`)
	if err := n.delWith(n.args("pod", pod, upgraded)); err != nil {
		t.Fatalf("DEL with an upgraded conflist: %v", err)
	}
	if got := n.allocations(); len(got) != 0 || linkExists(n.ns, plugin.HostVethName("pod", "eth0")) {
		t.Fatalf("DEL left allocations %v or the host veth", got)
	}
	if _, err := n.addWith("pod2", nettest.NewNS(t), upgraded); cniCode(err) != types.ErrInvalidNetworkConfig {
		t.Fatalf("ADD with the unknown field: %v, want code 7 (ADD stays strict)", err)
	}
}

func TestDelSucceedsOnKeyCNSRejects(t *testing.T) {
	n := newNode(t)
	for _, cid := range []string{strings.Repeat("x", 300), "a/b"} {
		if err := n.delWith(n.args(cid, nil, n.conf)); err != nil {
			t.Fatalf("DEL of container ID %.20q...: %v", cid, err)
		}
	}
}

func TestAddChainedAfterAnotherPluginKeepsPrevResult(t *testing.T) {
	n := newNode(t)
	pod := nettest.NewNS(t)
	prev := `{"cniVersion":"1.1.0","interfaces":[{"name":"other0","sandbox":"` + pod.Path() + `"}],` +
		`"ips":[{"address":"192.168.9.9/24","interface":0}],"routes":[{"dst":"192.168.0.0/16"}],"dns":{"nameservers":["192.0.2.53"]}}`
	res, err := n.addWith("pod", pod, n.confWith(`,"prevResult":`+prev))
	if err != nil {
		t.Fatalf("chained ADD: %v", err)
	}
	if len(res.Interfaces) != 3 || res.Interfaces[0].Name != "other0" || res.Interfaces[2].Name != "eth0" {
		t.Fatalf("interfaces %+v, want other0 then ours", res.Interfaces)
	}
	if len(res.IPs) != 2 || res.IPs[0].Address.String() != "192.168.9.9/24" || *res.IPs[1].Interface != 2 {
		t.Fatalf("ips %+v, want the previous address kept and ours on interface 2", res.IPs)
	}
	if len(res.Routes) < 2 || res.Routes[0].Dst.String() != "192.168.0.0/16" || fmt.Sprint(res.DNS.Nameservers) != "[192.0.2.53]" {
		t.Fatalf("routes %v dns %v, want the previous ones kept", res.Routes, res.DNS)
	}
	if err := n.check("pod", pod, res); err != nil {
		t.Fatalf("CHECK of the merged result: %v", err)
	}
}

func TestDelFromAnotherNetworkLeavesPod(t *testing.T) {
	n := newNode(t)
	pod := nettest.NewNS(t)
	_, addr := n.mustAdd("pod", pod)
	other := []byte(strings.Replace(string(n.conf), `"name":"vnet"`, `"name":"other"`, 1))
	if err := n.delWith(n.args("pod", pod, other)); err != nil {
		t.Fatalf("DEL from another network: %v", err)
	}
	n.alive(t, "pod", pod, addr)
}
