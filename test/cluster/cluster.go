package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/vnet-cni/vnet-cni/cns/cloud/azure"
	"github.com/vnet-cni/vnet-cni/cns/cloud/crd"
	"github.com/vnet-cni/vnet-cni/cns/controller"
	"github.com/vnet-cni/vnet-cni/test/k8s"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
)

// APIServer is a real kube-apiserver + etcd with the NodeNetworkConfig CRD installed.
type APIServer struct {
	Config *rest.Config
	env    *envtest.Environment
}

// running holds how to stop the processes this test binary started (control planes,
// controller processes). They outlive a test binary that is killed, whose cleanups do not run
// then, so stopOnSignal stops them when the binary is asked to end. A start holds starting
// (read) from before its processes exist until they are in running.
var (
	running  sync.Map // key → func() that stops it and waits
	starting sync.RWMutex
)

// stopOnSignal makes SIGINT and SIGTERM stop the running processes before the test binary
// exits with the signal's status. TestMain calls it. (A test that runs past -timeout panics;
// nothing can run then.)
func stopOnSignal() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		signal.Reset(syscall.SIGINT, syscall.SIGTERM) // a second signal ends the binary at once
		fmt.Fprintf(os.Stderr, "test/cluster: %v: stopping the control planes and controllers\n", s)
		starting.Lock() // what is being started finishes starting first
		var wg sync.WaitGroup
		running.Range(func(_, stop any) bool {
			wg.Go(stop.(func()))
			return true
		})
		wg.Wait()
		os.Exit(128 + int(s.(syscall.Signal)))
	}()
}

// StartAPIServer starts the control plane. Without the binaries the test is skipped on a
// developer machine and fails under CI=true (make test builds them).
func StartAPIServer(t testing.TB) *APIServer {
	t.Helper()
	dir := k8s.RequireBins(t) // skips on a developer machine without them, fails under CI=true
	_, file, _, _ := runtime.Caller(0)
	env := &envtest.Environment{BinaryAssetsDirectory: dir, ErrorIfCRDPathMissing: true,
		CRDDirectoryPaths: []string{filepath.Join(filepath.Dir(file), "..", "..", "cns", "deploy", "crd")}}
	// One Stop, whoever calls it first (a cleanup or a signal); a later caller waits for it,
	// so a signal during a cleanup's Stop does not exit before etcd is stopped.
	stop := sync.OnceFunc(func() { _ = env.Stop() })
	starting.RLock() // a signal now waits for the start, then stops what it made
	running.Store(env, stop)
	rc, err := env.Start()
	starting.RUnlock()
	if err != nil {
		stop() // what started of it
		running.Delete(env)
		t.Fatalf("start kube-apiserver + etcd: %v", err)
	}
	t.Cleanup(func() {
		stop()
		running.Delete(env)
	})
	rc.QPS, rc.Burst = 1000, 2000 // one client stands for many nodes
	return &APIServer{Config: rc, env: env}
}

// Mock is an in-process mockarm on loopback.
type Mock struct {
	*mockarm.Server
	URL string

	mu   sync.Mutex
	nics map[string]string // node → ARM ID of its NIC
	ss   int               // scale-set instances made so far
}

// Shape is how a simulated node's VM exists in ARM.
type Shape int

const (
	StandaloneVM Shape = iota // NIC <node>-nic, written by NIC PUT
	ScaleSetVM                // an instance of scale set "pool", written through the instance
)

// AddNode makes node's VM in the mock and returns the provider ID kubelet's cloud provider
// would give its Node.
func (m *Mock) AddNode(node string, shape Shape) (string, error) {
	c := mockarm.DefaultConfig()
	m.mu.Lock()
	defer m.mu.Unlock()
	var vm, nic string
	switch shape {
	case ScaleSetVM:
		inst := strconv.Itoa(m.ss)
		m.ss++
		vm, nic = mockarm.ScaleSetVMID(c.Subscription, c.ResourceGroup, "pool", inst), mockarm.ScaleSetNICID(c.Subscription, c.ResourceGroup, "pool", inst, "pool-nic")
		if _, err := m.CreateScaleSetVM(c.Subscription, c.ResourceGroup, "pool", inst, "pool-nic", netip.Addr{}); err != nil {
			return "", err
		}
		m.SetComputerName(vm, node) // the controller checks the instance is the node's
	default:
		vm, nic = mockarm.VMID(c.Subscription, c.ResourceGroup, node), mockarm.NICID(c.Subscription, c.ResourceGroup, node+"-nic")
		if _, err := m.CreateVM(c.Subscription, c.ResourceGroup, node, netip.Addr{}); err != nil {
			return "", err
		}
	}
	if m.nics == nil {
		m.nics = map[string]string{}
	}
	m.nics[node] = nic
	return "azure://" + vm, nil
}

// NodeNICAddrs is the secondary addresses the NIC of node (made by AddNode) holds, sorted.
func (m *Mock) NodeNICAddrs(node string) []netip.Addr {
	m.mu.Lock()
	id := m.nics[node]
	m.mu.Unlock()
	a, _ := m.NICAddrsByID(id)
	return a
}

// StartMock serves mockarm (NICs created on first read) until the test ends.
func StartMock(t testing.TB, cfg mockarm.Config) *Mock {
	t.Helper()
	cfg.AutoCreateNICs = true
	s, err := mockarm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })
	return &Mock{Server: s, URL: "http://" + l.Addr().String()}
}

// AzureConfig is the ARM client configuration of node's NIC on m.
func (m *Mock) AzureConfig(node string) azure.Config {
	c := mockarm.DefaultConfig()
	return azure.Config{Endpoint: m.URL, Subscription: c.Subscription, ResourceGroup: c.ResourceGroup,
		NIC: node + "-nic", Auth: azure.AuthStatic, StaticToken: "mock"}
}

// ControllerConfig is a controller configuration for m with a short lease, for failover tests.
func (m *Mock) ControllerConfig() controller.Config {
	c := controller.DefaultConfig()
	a := m.AzureConfig("")
	c.Azure = azure.Config{Endpoint: a.Endpoint, Auth: a.Auth, StaticToken: a.StaticToken} // nodes found by provider ID
	c.LeaseNamespace = "default"
	c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = 4*time.Second, 3*time.Second, 500*time.Millisecond
	c.CloudTimeout = 60 * time.Second
	return c
}

// Controller is one vnet-controller instance running in this process.
type Controller struct {
	Elected <-chan struct{}
	Metrics *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
}

// StartController runs a controller instance. Kill stops it the way SIGKILL would for the
// lease: it is not released, so a standby must wait out the lease duration.
func StartController(t testing.TB, rc *rest.Config, cfg controller.Config, log *slog.Logger) *Controller {
	t.Helper()
	rc = rest.CopyConfig(rc)
	rc.QPS, rc.Burst = cfg.APIQPS, cfg.APIBurst
	mgr, err := ctrl.NewManager(rc, manager.Options{Scheme: crd.Scheme(),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		LeaderElection: cfg.LeaderElect, LeaderElectionID: cfg.LeaseName, LeaderElectionNamespace: cfg.LeaseNamespace,
		LeaseDuration: &cfg.LeaseDuration, RenewDeadline: &cfg.RenewDeadline, RetryPeriod: &cfg.RetryPeriod})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := controller.Setup(mgr, cfg, reg, log); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Controller{Elected: mgr.Elected(), Metrics: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- mgr.Start(ctx) }()
	t.Cleanup(c.Kill)
	return c
}

// Kill stops the instance without releasing its lease.
func (c *Controller) Kill() {
	c.cancel()
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
	}
}

// Client is an API client able to watch, for simulated nodes.
func Client(rc *rest.Config) (client.WithWatch, error) {
	return client.NewWithWatch(rc, client.Options{Scheme: crd.Scheme()})
}

// CreateNodes makes each node's VM of the given shape in m and its Node object (the owner of
// its NodeNetworkConfig) with the VM's provider ID, as Azure's cloud provider sets it.
func CreateNodes(ctx context.Context, c client.Client, m *Mock, shape Shape, names []string) error {
	var errs []error
	for _, n := range names {
		pid, err := m.AddNode(n, shape)
		if err == nil {
			err = c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}, Spec: corev1.NodeSpec{ProviderID: pid}})
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

var _ http.RoundTripper = (*controller.Transport)(nil)
