package cluster

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/vnet-cni/vnet-cni/cns/api/v1alpha1"
	"github.com/vnet-cni/vnet-cni/cns/cloud/crd"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
	"github.com/vnet-cni/vnet-cni/test/stack"
)

// env is a control plane, mockarm and an API client with a cache over every NodeNetworkConfig.
type env struct {
	api   *APIServer
	mock  *Mock
	c     client.WithWatch
	cc    *crd.Client // the typed client simulated nodes use, as cns does
	cache *crd.Cache
	ctx   context.Context
	made  int // simulated nodes made so far (their names are node-NNN)
}

func newEnv(t *testing.T, latency time.Duration) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	t.Cleanup(cancel)
	api := StartAPIServer(t)
	mc := mockarm.DefaultConfig()
	mc.Latency = latency
	mc.Log = stack.Quiet(t)
	mock := StartMock(t, mc)
	c, err := Client(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := crd.NewClient(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	cache, err := crd.NewCache(ctx, cc, "", stack.Quiet(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	return &env{api: api, mock: mock, c: c, cc: cc, cache: cache, ctx: ctx}
}

func (e *env) nodes(t *testing.T, n int) []*Node {
	t.Helper()
	return e.shapedNodes(t, n, StandaloneVM)
}

func (e *env) shapedNodes(t *testing.T, n int, shape Shape) []*Node {
	t.Helper()
	var names []string
	for range n {
		names = append(names, fmt.Sprintf("node-%03d", e.made))
		e.made++
	}
	if err := CreateNodes(e.ctx, e.c, e.mock, shape, names); err != nil {
		t.Fatal(err)
	}
	var out []*Node
	for _, name := range names {
		nic, err := CRDNIC(e.ctx, e.cc, e.cache, name)
		if err != nil {
			t.Fatal(err)
		}
		nd, err := StartNode(name, nic, PoolConfig(), t.TempDir(), stack.Quiet(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nd.Stop)
		out = append(out, nd)
	}
	return out
}

func (e *env) nnc(t *testing.T, name string) *v1.NodeNetworkConfig {
	t.Helper()
	o := &v1.NodeNetworkConfig{}
	if err := e.c.Get(e.ctx, client.ObjectKey{Name: name}, o); err != nil {
		t.Fatal(err)
	}
	return o
}

// poll waits for cond, failing with what after within.
func poll(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) nicAddrs(name string) []netip.Addr { return e.mock.NodeNICAddrs(name) }

func warm(n *Node) bool {
	p := n.Pool()
	return p.GetCounts().GetAvailable() >= uint32(PoolConfig().Limits.MinFree)
}

func TestClusterModeNodesWarmAndServePodsThroughTheController(t *testing.T) {
	e := newEnv(t, 50*time.Millisecond)
	ctl := StartController(t, e.api.Config, e.mock.ControllerConfig(), stack.Quiet(t))
	<-ctl.Elected
	// The controller finds each NIC from the Node's provider ID: standalone VMs (NIC PUT) and
	// scale-set instances (instance update), as cns does in direct mode.
	nodes := append(e.shapedNodes(t, 2, StandaloneVM), e.shapedNodes(t, 2, ScaleSetVM)...)
	for _, n := range nodes {
		poll(t, time.Minute, n.Name+" warm", func() bool { return warm(n) })
	}
	var wg sync.WaitGroup
	errs := make(chan error, 30*len(nodes))
	for _, n := range nodes {
		for i := range 30 {
			wg.Go(func() {
				if _, err := n.Request(e.ctx, i); err != nil {
					errs <- fmt.Errorf("%s pod %d: %w", n.Name, i, err)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, n := range nodes {
		poll(t, time.Minute, n.Name+" settled", func() bool {
			o := e.nnc(t, n.Name)
			return o.Status.ObservedGeneration == o.Generation && warm(n)
		})
		o := e.nnc(t, n.Name)
		held := e.nicAddrs(n.Name)
		var status []netip.Addr
		for _, ipc := range o.Status.IPConfigurations {
			status = append(status, netip.MustParseAddr(ipc.Address))
		}
		slices.SortFunc(status, netip.Addr.Compare)
		if !slices.Equal(status, held) {
			t.Errorf("%s: status lists %v, the NIC holds %v", n.Name, status, held)
		}
		if !meta.IsStatusConditionTrue(o.Status.Conditions, v1.ConditionReady) {
			t.Errorf("%s: Ready is not True: %+v", n.Name, o.Status.Conditions)
		}
		if o.OwnerReferences[0].Kind != "Node" || o.OwnerReferences[0].Name != n.Name {
			t.Errorf("%s: owner %+v, want its Node", n.Name, o.OwnerReferences)
		}
		if got := n.Pool().GetCounts().GetAssigned(); got != 30 {
			t.Errorf("%s: %d addresses assigned, want 30", n.Name, got)
		}
	}
	// The operator's view: per node requested, assigned and free through the printer columns.
	out, stderr, err := e.api.env.ControlPlane.KubeCtl().Run("get", "nodenetworkconfigs")
	b := new(strings.Builder)
	_, _ = io.Copy(b, out)
	if err != nil {
		eb := new(strings.Builder)
		_, _ = io.Copy(eb, stderr)
		t.Fatalf("kubectl get nodenetworkconfigs: %v: %s", err, eb)
	}
	t.Logf("kubectl get nodenetworkconfigs:\n%s", b)
	if !strings.Contains(b.String(), "REQUESTED") || !strings.Contains(b.String(), "ASSIGNED") || !strings.Contains(b.String(), "FREE") {
		t.Errorf("kubectl get nodenetworkconfigs lacks the requested/assigned/free columns:\n%s", b)
	}
}

// spec sets a NodeNetworkConfig's spec the way a node's cns would, and returns its generation.
func (e *env) spec(t *testing.T, name string, requested int32, notInUse ...string) int64 {
	t.Helper()
	o := e.nnc(t, name)
	want := o.DeepCopy()
	want.Spec.RequestedIPCount, want.Spec.IPsNotInUse = requested, notInUse
	if err := e.c.Patch(e.ctx, want, client.MergeFrom(o)); err != nil {
		t.Fatal(err)
	}
	return want.Generation
}

func (e *env) applied(t *testing.T, name string, gen int64) *v1.NodeNetworkConfig {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		o := e.nnc(t, name)
		if o.Status.ObservedGeneration >= gen {
			return o
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: generation %d not applied within a minute; status %+v", name, gen, o.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) bareNode(t *testing.T, name string) {
	t.Helper()
	if err := CreateNodes(e.ctx, e.c, e.mock, StandaloneVM, []string{name}); err != nil {
		t.Fatal(err)
	}
	if _, err := CRDNIC(e.ctx, e.cc, e.cache, name); err != nil {
		t.Fatal(err)
	}
}

func TestControllerNeverRemovesAnAddressTheNodeDidNotList(t *testing.T) {
	e := newEnv(t, 0)
	ctl := StartController(t, e.api.Config, e.mock.ControllerConfig(), stack.Quiet(t))
	<-ctl.Elected
	e.bareNode(t, "n1")
	o := e.applied(t, "n1", e.spec(t, "n1", 6))
	if o.Status.AssignedIPCount != 6 || len(e.nicAddrs("n1")) != 6 {
		t.Fatalf("after asking for 6: status %d, NIC %d", o.Status.AssignedIPCount, len(e.nicAddrs("n1")))
	}
	before := e.nicAddrs("n1")
	// The node asks for 1 but lists only one address for release: five must stay.
	o = e.applied(t, "n1", e.spec(t, "n1", 1, before[2].String(), "10.240.255.200"))
	after := e.nicAddrs("n1")
	want := slices.Delete(slices.Clone(before), 2, 3)
	if !slices.Equal(after, want) {
		t.Fatalf("NIC holds %v after a release of %s with requested 1; want %v (only the listed address removed)", after, before[2], want)
	}
	if o.Status.AssignedIPCount != 5 {
		t.Fatalf("status reports %d addresses, want 5", o.Status.AssignedIPCount)
	}
}

func TestControllerCoalescesSpecChangesWhileAWriteIsInFlight(t *testing.T) {
	e := newEnv(t, 1500*time.Millisecond) // each NIC write takes 1.5 s
	ctl := StartController(t, e.api.Config, e.mock.ControllerConfig(), stack.Quiet(t))
	<-ctl.Elected
	e.bareNode(t, "n1")
	e.applied(t, "n1", 1)
	start := e.mock.Stats().Writes
	e.spec(t, "n1", 2)
	poll(t, 30*time.Second, "the first write in flight", func() bool { return e.mock.Stats().Writes > start })
	var gen int64
	for _, n := range []int32{3, 5, 8, 13} {
		gen = e.spec(t, "n1", n)
	}
	o := e.applied(t, "n1", gen)
	if w := e.mock.Stats().Writes - start; w != 2 {
		t.Fatalf("%d NIC writes for 5 spec changes, 4 of them during the first write; want 2 (one, then one for all the rest)", w)
	}
	if o.Status.AssignedIPCount != 13 || len(e.nicAddrs("n1")) != 13 {
		t.Fatalf("status %d / NIC %d addresses, want 13", o.Status.AssignedIPCount, len(e.nicAddrs("n1")))
	}
}

// podsDuringFailover starts 40 pod requests on each node, concurrently, and returns a wait
// that ends when all have answered, with the addresses granted per node. Requests that fail
// are test errors: a failover must not fail a pod.
func podsDuringFailover(t *testing.T, e *env, nodes []*Node) (wait func() [][]netip.Addr) {
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes)*40)
	granted := make([][]netip.Addr, len(nodes))
	for j, n := range nodes {
		wg.Go(func() {
			for i := range 40 {
				g, err := n.Request(e.ctx, i)
				if err != nil {
					errs <- fmt.Errorf("%s pod %d: %w", n.Name, i, err)
					continue
				}
				granted[j] = append(granted[j], g.Entry.Addr)
			}
		})
	}
	return func() [][]netip.Addr {
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		return granted
	}
}

// noWriteTwiceNoAddressLost checks, once every node has settled, that no NIC write was applied
// twice (a NIC holding more than its node asked for, or a write refused by If-Match because
// two writers raced) and that every granted address is still on its NIC and assigned.
func noWriteTwiceNoAddressLost(t *testing.T, e *env, nodes []*Node, granted [][]netip.Addr) {
	for j, n := range nodes {
		poll(t, time.Minute, n.Name+" settled", func() bool {
			o := e.nnc(t, n.Name)
			return o.Status.ObservedGeneration == o.Generation && meta.IsStatusConditionTrue(o.Status.Conditions, v1.ConditionReady)
		})
		o := e.nnc(t, n.Name)
		held := e.nicAddrs(n.Name)
		if int32(len(held)) != o.Spec.RequestedIPCount {
			t.Errorf("%s: the NIC holds %d addresses, the node asked for %d (a write applied twice?)", n.Name, len(held), o.Spec.RequestedIPCount)
		}
		for _, a := range granted[j] {
			if _, ok := slices.BinarySearchFunc(held, a, netip.Addr.Compare); !ok {
				t.Errorf("%s: assigned address %s is gone from the NIC", n.Name, a)
			}
		}
		if got := n.Pool().GetCounts().GetAssigned(); got != uint32(len(granted[j])) {
			t.Errorf("%s: %d assigned, want %d", n.Name, got, len(granted[j]))
		}
	}
	if st := e.mock.Stats(); st.PreconditionFailed != 0 {
		t.Errorf("%d NIC writes refused by If-Match: two writers raced", st.PreconditionFailed)
	}
}

func TestLeaderKilledMidRunStandbyTakesOverWithoutDoubleWritesOrLostAddresses(t *testing.T) {
	e := newEnv(t, 300*time.Millisecond)
	cfg := e.mock.ControllerConfig()
	leader := StartController(t, e.api.Config, cfg, stack.Quiet(t))
	<-leader.Elected
	standby := StartController(t, e.api.Config, cfg, stack.Quiet(t))
	nodes := e.nodes(t, 6)
	for _, n := range nodes {
		poll(t, time.Minute, n.Name+" warm", func() bool { return warm(n) })
	}
	wait := podsDuringFailover(t, e, nodes)
	poll(t, time.Minute, "writes under way", func() bool { return e.mock.Stats().Writes > 6+3 })
	killed := time.Now()
	leader.Kill()
	select {
	case <-standby.Elected:
	case <-time.After(cfg.LeaseDuration + 2*cfg.RetryPeriod + 5*time.Second):
		t.Fatalf("the standby was not elected %s after the leader died (lease %s)", time.Since(killed), cfg.LeaseDuration)
	}
	took := time.Since(killed)
	// client-go's bound is the lease duration after the standby last saw a renewal, plus its
	// jittered retry period; the hard limit above leaves room for a loaded machine.
	t.Logf("standby elected %s after the leader was killed (lease duration %s, retry period %s)",
		took.Round(time.Millisecond), cfg.LeaseDuration, cfg.RetryPeriod)
	noWriteTwiceNoAddressLost(t, e, nodes, wait())
}
