package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vnet-cni/vnet-cni/plugin"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	"github.com/vnet-cni/vnet-cni/test/nettest"
	"github.com/vnet-cni/vnet-cni/test/stack"
)

// env is one node namespace with cns running and a conflist naming vnet-cni.
type env struct {
	t       *testing.T
	s       *stack.Stack
	node    ns.NetNS
	confDir string
	cache   string
	list    []byte
}

func newEnv(t *testing.T) *env {
	nettest.RequireRoot(t)
	s := stack.Start(t, stack.Options{})
	e := &env{t: t, s: s, node: nettest.NewNS(t), confDir: t.TempDir(), cache: t.TempDir()}
	e.list = shippedConflist(t, s.Socket, filepath.Join(s.Dir, "spool"), true)
	if err := os.WriteFile(filepath.Join(e.confDir, "10-vnet.conflist"), e.list, 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// shippedConflist is the conflist the image ships (cmd/vnet-cni/10-vnet.conflist) with this
// test's socket, spool and a shorter request timeout; without cniVersions it is what a
// runtime whose libcni predates that key (containerd 1.6 and 1.7) reads: cniVersion alone.
func shippedConflist(t *testing.T, socket, spool string, cniVersions bool) []byte {
	t.Helper()
	b, err := os.ReadFile("../../cmd/vnet-cni/10-vnet.conflist")
	if err != nil {
		t.Fatal(err)
	}
	var list map[string]any
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatalf("the shipped conflist: %v", err)
	}
	p := list["plugins"].([]any)[0].(map[string]any)
	p["cnsSocket"], p["releaseSpool"], p["requestTimeout"] = socket, spool, "20s"
	if !cniVersions {
		delete(list, "cniVersions")
	}
	if b, err = json.Marshal(list); err != nil {
		t.Fatal(err)
	}
	return b
}

// The shipped conflist as containerd 1.6/1.7 read it (cniVersion 1.0.0, no cniVersions): ADD
// prints a 1.0.0 result, which those runtimes accept (a 1.1.0 one failed every sandbox),
// and DEL cleans up.
func TestShippedConflistServesRuntimesThatReadOnlyCniVersion(t *testing.T) {
	e := newEnv(t)
	list, err := libcni.NetworkConfFromBytes(shippedConflist(t, e.s.Socket, filepath.Join(e.s.Dir, "spool"), false))
	if err != nil {
		t.Fatal(err)
	}
	if list.CNIVersion != "1.0.0" {
		t.Fatalf("the shipped conflist says cniVersion %s, want 1.0.0 (containerd 1.6/1.7 reject a 1.1.0 result)", list.CNIVersion)
	}
	cfg := libcni.NewCNIConfigWithCacheDir([]string{binDir}, e.cache, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rt := &libcni.RuntimeConf{ContainerID: "ctrd16", NetNS: nettest.NewNS(t).Path(), IfName: "eth0"}
	var res types.Result
	if err := e.node.Do(func(ns.NetNS) (err error) { res, err = cfg.AddNetworkList(ctx, list, rt); return err }); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if res.Version() != "1.0.0" {
		t.Errorf("ADD printed a %s result, want 1.0.0", res.Version())
	}
	if err := e.node.Do(func(ns.NetNS) error { return cfg.DelNetworkList(ctx, list, rt) }); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if got := e.allocations(); len(got) != 0 {
		t.Errorf("allocations after DEL: %v", got)
	}
}

// cnitool runs cnitool inside the node namespace: a child forked from a thread locked in a
// namespace starts in that namespace.
func (e *env) cnitool(args ...string) (string, error) {
	var out bytes.Buffer
	err := e.node.Do(func(ns.NetNS) error {
		cmd := exec.Command(cnitool, args...)
		cmd.Env = []string{"NETCONFPATH=" + e.confDir, "CNI_PATH=" + binDir, "PATH=" + os.Getenv("PATH"),
			"CNI_ARGS=K8S_POD_NAMESPACE=e2e;K8S_POD_NAME=cnitool"}
		cmd.Stdout, cmd.Stderr = &out, &out
		return cmd.Run()
	})
	return out.String(), err
}

func (e *env) allocations() []*cnsv1.Allocation { return e.s.Allocations() }

func hostVeths(n ns.NetNS) []string {
	var names []string
	_ = n.Do(func(ns.NetNS) error {
		links, _ := netlink.LinkList()
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "vnet") {
				names = append(names, l.Attrs().Name)
			}
		}
		return nil
	})
	return names
}

func TestCNIToolLifecycle(t *testing.T) {
	requireCNITool(t)
	e := newEnv(t)
	pod := nettest.NewNS(t)

	out, err := e.cnitool("add", "vnet", pod.Path())
	if err != nil {
		t.Fatalf("cnitool add: %v\n%s", err, out)
	}
	var res current.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.IPs) != 1 {
		t.Fatalf("cnitool add printed %q (%v)", out, err)
	}
	got := e.allocations()
	if len(got) != 1 || got[0].GetAddress() != res.IPs[0].Address.IP.String() || got[0].GetPodName() != "cnitool" {
		t.Fatalf("cns allocations %v, result %v", got, res.IPs[0])
	}
	if out, err := e.cnitool("check", "vnet", pod.Path()); err != nil {
		t.Fatalf("cnitool check: %v\n%s", err, out)
	}
	if out, err := e.cnitool("status", "vnet", pod.Path()); err != nil {
		t.Fatalf("cnitool status: %v\n%s", err, out)
	}
	if out, err := e.cnitool("del", "vnet", pod.Path()); err != nil {
		t.Fatalf("cnitool del: %v\n%s", err, out)
	}
	if got := e.allocations(); len(got) != 0 || len(hostVeths(e.node)) != 0 {
		t.Fatalf("after del: allocations %v, host veths %v", got, hostVeths(e.node))
	}

	// gc from cnitool lists no valid attachment: everything of ours goes.
	if out, err := e.cnitool("add", "vnet", pod.Path()); err != nil {
		t.Fatalf("cnitool add again: %v\n%s", err, out)
	}
	if out, err := e.cnitool("gc", "vnet", pod.Path()); err != nil {
		t.Fatalf("cnitool gc: %v\n%s", err, out)
	}
	if got := e.allocations(); len(got) != 0 || len(hostVeths(e.node)) != 0 {
		t.Fatalf("after gc: allocations %v, host veths %v", got, hostVeths(e.node))
	}

	// STATUS follows cns: 50 while it is down, 0 once it is back.
	e.s.StopCNS()
	out, err = e.cnitool("status", "vnet", pod.Path())
	if err == nil || !strings.Contains(out, "cns unreachable") {
		t.Fatalf("cnitool status with cns down: %v %s, want a failure naming cns", err, out)
	}
	e.s.StartCNS()
	if out, err := e.cnitool("status", "vnet", pod.Path()); err != nil {
		t.Fatalf("cnitool status after restart: %v\n%s", err, out)
	}
}

func TestLibcniLifecycle(t *testing.T) {
	e := newEnv(t)
	list, err := libcni.NetworkConfFromBytes(e.list)
	if err != nil {
		t.Fatal(err)
	}
	cfg := libcni.NewCNIConfigWithCacheDir([]string{binDir}, e.cache, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pods := []ns.NetNS{nettest.NewNS(t), nettest.NewNS(t)}
	rts := make([]*libcni.RuntimeConf, len(pods))
	addrs := make([]netip.Addr, len(pods))
	for i, p := range pods {
		rts[i] = &libcni.RuntimeConf{ContainerID: fmt.Sprint("libcni-", i), NetNS: p.Path(), IfName: "eth0",
			Args: [][2]string{{"K8S_POD_NAMESPACE", "e2e"}, {"K8S_POD_NAME", fmt.Sprint("pod-", i)}}}
		var res types.Result
		err := e.node.Do(func(ns.NetNS) (err error) {
			res, err = cfg.AddNetworkList(ctx, list, rts[i])
			return err
		})
		if err != nil {
			t.Fatalf("AddNetworkList %d: %v", i, err)
		}
		r, _ := current.NewResultFromResult(res)
		addrs[i], _ = netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
		if err := e.node.Do(func(ns.NetNS) error { return cfg.CheckNetworkList(ctx, list, rts[i]) }); err != nil {
			t.Fatalf("CheckNetworkList %d: %v", i, err)
		}
	}
	if err := nettest.Ping(pods[0], addrs[1], 3*time.Second); err != nil {
		t.Fatalf("pod 0 -> pod 1: %v", err)
	}
	// GC keeping only pod 0 releases pod 1 and removes its host veth.
	gcArgs := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: rts[0].ContainerID, IfName: "eth0"}}}
	if err := e.node.Do(func(ns.NetNS) error { return cfg.GCNetworkList(ctx, list, gcArgs) }); err != nil {
		t.Fatalf("GCNetworkList: %v", err)
	}
	got := e.allocations()
	if len(got) != 1 || got[0].GetContainerId() != rts[0].ContainerID {
		t.Fatalf("allocations after GC: %v", got)
	}
	if v := hostVeths(e.node); len(v) != 1 || v[0] != plugin.HostVethName(rts[0].ContainerID, "eth0") {
		t.Fatalf("host veths after GC: %v", v)
	}
	if err := e.node.Do(func(ns.NetNS) error { return cfg.GetStatusNetworkList(ctx, list) }); err != nil {
		t.Fatalf("GetStatusNetworkList: %v", err)
	}
	e.s.StopCNS()
	err = e.node.Do(func(ns.NetNS) error { return cfg.GetStatusNetworkList(ctx, list) })
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable {
		t.Fatalf("GetStatusNetworkList with cns down: %v, want code 50", err)
	}
	e.s.StartCNS()
	for i := range pods {
		if err := e.node.Do(func(ns.NetNS) error { return cfg.DelNetworkList(ctx, list, rts[i]) }); err != nil {
			t.Fatalf("DelNetworkList %d: %v", i, err)
		}
	}
	if got := e.allocations(); len(got) != 0 || len(hostVeths(e.node)) != 0 {
		t.Fatalf("after DEL: allocations %v, host veths %v", got, hostVeths(e.node))
	}
}

func TestBadInputNeverAllocates(t *testing.T) {
	e := newEnv(t)
	pod := nettest.NewNS(t)
	notNS := filepath.Join(t.TempDir(), "not-a-netns")
	os.WriteFile(notNS, nil, 0o644)
	good := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"vnet","type":"vnet-cni","cnsSocket":%q}`, e.s.Socket)
	tests := []struct {
		name     string
		stdin    string
		netns    string
		ifname   string
		wantCode uint
	}{
		{"malformed JSON", `{"cniVersion":"1.1.0",`, pod.Path(), "eth0", types.ErrDecodingFailure},
		{"wrong type", `{"cniVersion":"1.1.0","name":"vnet","type":"vnet-cni","mtu":"large"}`, pod.Path(), "eth0", types.ErrInvalidNetworkConfig},
		{"unknown field", `{"cniVersion":"1.1.0","name":"vnet","type":"vnet-cni","cnsSock":"/x"}`, pod.Path(), "eth0", types.ErrInvalidNetworkConfig},
		{"mtu out of range", `{"cniVersion":"1.1.0","name":"vnet","type":"vnet-cni","mtu":70000}`, pod.Path(), "eth0", types.ErrInvalidNetworkConfig},
		{"missing CNI_NETNS", good, "", "eth0", types.ErrInvalidEnvironmentVariables},
		{"netns not a namespace", good, notNS, "eth0", types.ErrInvalidEnvironmentVariables},
		{"netns missing", good, "/var/run/netns/vnet-e2e-missing", "eth0", types.ErrInvalidEnvironmentVariables},
		{"20-character ifname", good, pod.Path(), strings.Repeat("i", 20), types.ErrInvalidEnvironmentVariables},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := e.node.Do(func(ns.NetNS) error {
				cmd := exec.Command(filepath.Join(binDir, "vnet-cni"))
				cmd.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=bad-input", "CNI_IFNAME=" + tc.ifname, "CNI_PATH=" + binDir}
				if tc.netns != "" {
					cmd.Env = append(cmd.Env, "CNI_NETNS="+tc.netns)
				}
				cmd.Stdin, cmd.Stdout = strings.NewReader(tc.stdin), &out
				return cmd.Run()
			})
			var te types.Error
			if err == nil || json.Unmarshal(out.Bytes(), &te) != nil || te.Code != tc.wantCode {
				t.Fatalf("exit %v, printed %s; want CNI error code %d", err, out.String(), tc.wantCode)
			}
			if got := e.allocations(); len(got) != 0 {
				t.Fatalf("bad input allocated: %v", got)
			}
		})
	}
}

// TestGCOfOneNetworkLeavesOtherNetworksPods runs two networks (two conflists, both vnet-cni,
// one cns) through libcni: CNI's valid-attachments lists only the attachments of the network
// being collected, so GC of network A must not release network B's live pods nor delete their
// host veths.
func TestGCOfOneNetworkLeavesOtherNetworksPods(t *testing.T) {
	e := newEnv(t)
	listA, err := libcni.NetworkConfFromBytes(e.list)
	if err != nil {
		t.Fatal(err)
	}
	listB, err := libcni.NetworkConfFromBytes([]byte(strings.Replace(string(e.list), `"name":"vnet"`, `"name":"vnet-b"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	cfg := libcni.NewCNIConfigWithCacheDir([]string{binDir}, e.cache, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type pod struct {
		list *libcni.NetworkConfigList
		rt   *libcni.RuntimeConf
		ns   ns.NetNS
		addr netip.Addr
	}
	var pods []*pod
	for _, p := range []struct {
		list *libcni.NetworkConfigList
		id   string
	}{{listA, "a-keep"}, {listA, "a-gone"}, {listB, "b-live"}} {
		pn := nettest.NewNS(t)
		rt := &libcni.RuntimeConf{ContainerID: p.id, NetNS: pn.Path(), IfName: "eth0"}
		var res types.Result
		if err := e.node.Do(func(ns.NetNS) (err error) { res, err = cfg.AddNetworkList(ctx, p.list, rt); return err }); err != nil {
			t.Fatalf("AddNetworkList %s/%s: %v", p.list.Name, p.id, err)
		}
		r, _ := current.NewResultFromResult(res)
		a, _ := netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
		pods = append(pods, &pod{list: p.list, rt: rt, ns: pn, addr: a})
	}
	keepA, goneA, liveB := pods[0], pods[1], pods[2]

	gc := func(list *libcni.NetworkConfigList, valid ...*pod) {
		t.Helper()
		args := &libcni.GCArgs{}
		for _, p := range valid {
			args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: p.rt.ContainerID, IfName: "eth0"})
		}
		if err := e.node.Do(func(ns.NetNS) error { return cfg.GCNetworkList(ctx, list, args) }); err != nil {
			t.Fatalf("GCNetworkList %s: %v", list.Name, err)
		}
	}
	gc(listA, keepA)
	held := map[string]string{}
	for _, a := range e.allocations() {
		held[a.GetContainerId()] = a.GetAddress()
	}
	want := map[string]string{"a-keep": keepA.addr.String(), "b-live": liveB.addr.String()}
	if fmt.Sprint(held) != fmt.Sprint(want) {
		t.Fatalf("allocations after GC of network vnet: %v, want %v", held, want)
	}
	veths := hostVeths(e.node)
	wantVeths := []string{plugin.HostVethName("a-keep", "eth0"), plugin.HostVethName("b-live", "eth0")}
	slices.Sort(veths)
	slices.Sort(wantVeths)
	if !slices.Equal(veths, wantVeths) {
		t.Fatalf("host veths after GC of network vnet: %v, want %v", veths, wantVeths)
	}
	if err := nettest.Ping(keepA.ns, liveB.addr, 3*time.Second); err != nil {
		t.Fatalf("network vnet-b's pod unreachable after GC of network vnet: %v", err)
	}
	// And the other way round: GC of vnet-b with its one live pod changes nothing.
	gc(listB, liveB)
	if got := e.allocations(); len(got) != 2 || len(hostVeths(e.node)) != 2 {
		t.Fatalf("GC of vnet-b with its live pod listed: allocations %v, veths %v", got, hostVeths(e.node))
	}
	for _, p := range []*pod{keepA, goneA, liveB} {
		if err := e.node.Do(func(ns.NetNS) error { return cfg.DelNetworkList(ctx, p.list, p.rt) }); err != nil {
			t.Fatalf("DelNetworkList %s: %v", p.rt.ContainerID, err)
		}
	}
	if got := e.allocations(); len(got) != 0 || len(hostVeths(e.node)) != 0 {
		t.Fatalf("after DEL: allocations %v, host veths %v", got, hostVeths(e.node))
	}
}
