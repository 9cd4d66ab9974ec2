package cluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/vnet-cni/vnet-cni/cns"
	"github.com/vnet-cni/vnet-cni/cns/cloud/crd"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
)

// Scale proof, run by make bench-cluster (VNET_BENCH_CLUSTER=1): NODES simulated nodes start
// cold, get warm, then take PODS pods each in WAVES waves; once in cluster mode (CRD managers,
// vnet-controller processes — leader and standby, the leader killed mid-run), once in direct
// mode (each manager writes ARM itself), against the same mockarm bucket (200, 10/s).
func TestBenchCluster(t *testing.T) {
	if os.Getenv("VNET_BENCH_CLUSTER") == "" {
		t.Skip("make bench-cluster runs this (VNET_BENCH_CLUSTER=1)")
	}
	nodes := envInt("NODES", 1000)
	pods := envInt("PODS", 30)
	waves := envInt("WAVES", 3)
	modes := []string{"crd", "direct"}
	if m := os.Getenv("MODES"); m != "" {
		modes = strings.Fields(m)
	}
	for _, mode := range modes {
		r := benchMode(t, mode, nodes, pods, waves)
		fmt.Printf("mode=%s %s\n", mode, r)
	}
}

func envDuration(k string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(k)); err == nil && d > 0 {
		return d
	}
	return def
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}

type result struct {
	nodes, warm, failed               int
	armWrites, throttled              int
	perNodeEvent, warmSeconds, apiRPS float64
	rssMiB                            float64
	takeover                          time.Duration
	lostAddrs, overHeld               int
}

func (r result) String() string {
	s := fmt.Sprintf("nodes=%d warm=%d failed=%d arm_writes=%d writes_per_node_event=%.2f throttled_429=%d warm_seconds=%.1f apiserver_rps=%.1f controller_rss_mib=%.0f",
		r.nodes, r.warm, r.failed, r.armWrites, r.perNodeEvent, r.throttled, r.warmSeconds, r.apiRPS, r.rssMiB)
	if r.takeover > 0 {
		s += fmt.Sprintf(" leader_takeover_seconds=%.1f lost_addresses=%d nodes_over_requested=%d", r.takeover.Seconds(), r.lostAddrs, r.overHeld)
	}
	return s
}

func benchMode(t *testing.T, mode string, n, pods, waves int) result {
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler) // a thousand nodes' warnings would swamp the figures
	mc := mockarm.DefaultConfig()
	mc.Latency = 500 * time.Millisecond
	mc.Log = log
	mock := StartMock(t, mc)
	cfg := PoolConfig()
	dir := t.TempDir()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("node-%04d", i)
	}
	r := result{nodes: n}
	var api *APIServer
	var ctls []*exec.Cmd
	var e *env
	if mode == "crd" {
		api = StartAPIServer(t)
		e = &env{api: api, mock: mock, ctx: ctx}
		c, err := Client(api.Config)
		if err != nil {
			t.Fatal(err)
		}
		e.c = c
		if e.cc, err = crd.NewClient(api.Config); err != nil {
			t.Fatal(err)
		}
		if err := CreateNodes(ctx, c, names); err != nil {
			t.Fatal(err)
		}
		ctls = startControllerProcs(t, e, 2)
	}
	reqBefore := apiRequests(t, api)
	start := time.Now()
	nodesUp := make([]*Node, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	if mode == "crd" {
		cache, err := crd.NewCache(ctx, e.cc, "", log)
		if err == nil {
			err = cache.WaitSynced(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		e.cache = cache
	}
	for i, name := range names {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var nic cns.NICAPI
			var err error
			if mode == "crd" {
				nic, err = CRDNIC(ctx, e.cc, e.cache, name)
			} else {
				nic, err = DirectNIC(mock, name)
			}
			if err == nil {
				nodesUp[i], err = StartNode(name, nic, cfg, dir, log)
			}
			if err != nil {
				t.Errorf("start %s: %v", name, err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	defer func() {
		for _, nd := range nodesUp {
			nd.Stop()
		}
	}()
	deadline := time.Now().Add(envDuration("WARM_WITHIN", 10*time.Minute)) // the figures say how many made it
	for {
		w := 0
		for _, nd := range nodesUp {
			if warm(nd) {
				w++
			}
		}
		r.warm = w
		if w == n || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.warmSeconds = time.Since(start).Seconds()
	var failed atomic.Int32
	granted := make([][]string, n)
	per := (pods + waves - 1) / waves
	for w := range waves {
		if mode == "crd" && w == waves/2 {
			r.takeover = killLeader(t, e, ctls)
		}
		for i, nd := range nodesUp {
			wg.Go(func() {
				for p := w * per; p < min(pods, (w+1)*per); p++ {
					g, err := nd.Request(ctx, p)
					if err != nil {
						failed.Add(1)
						continue
					}
					granted[i] = append(granted[i], g.Entry.Addr.String())
				}
			})
		}
		wg.Wait()
	}
	r.failed = int(failed.Load())
	elapsed := time.Since(start)
	st := mock.Stats()
	r.armWrites, r.throttled = st.Writes, st.Throttled
	r.perNodeEvent = float64(st.Writes) / float64(n*(1+waves))
	if api != nil {
		r.apiRPS = float64(apiRequests(t, api)-reqBefore) / elapsed.Seconds()
		for _, c := range ctls {
			if c.ProcessState == nil {
				r.rssMiB = max(r.rssMiB, rssMiB(c.Process.Pid))
			}
		}
		for i, nd := range nodesUp {
			held := map[string]bool{}
			for _, a := range e.nicAddrs(nd.Name) {
				held[a.String()] = true
			}
			for _, a := range granted[i] {
				if !held[a] {
					r.lostAddrs++
				}
			}
			o := e.nnc(t, nd.Name)
			if int32(len(held)) > o.Spec.RequestedIPCount {
				r.overHeld++
			}
		}
	}
	return r
}

// startControllerProcs runs count vnet-controller processes (bin/vnet-controller) on a
// kubeconfig of the control plane, the mock's ARM and a short lease.
func startControllerProcs(t *testing.T, e *env, count int) []*exec.Cmd {
	api, mock := e.api, e.mock
	t.Helper()
	bin := os.Getenv("VNET_CONTROLLER_BIN")
	if bin == "" {
		t.Fatal("VNET_CONTROLLER_BIN is not set (make bench-cluster builds bin/vnet-controller)")
	}
	u, err := api.env.AddUser(envtest.User{Name: "vnet-controller", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := u.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	cc := mock.ControllerConfig()
	var out []*exec.Cmd
	for i := range count {
		cmd := exec.Command(bin, "--kubeconfig", path, "--arm-endpoint", mock.URL, "--auth", "static",
			"--subscription", cc.Azure.Subscription, "--resource-group", cc.Azure.ResourceGroup,
			"--lease-namespace", "default", "--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "500ms",
			"--workers", "64", "--metrics-listen", "0", "--health-listen", "0", "--log-level", "warn")
		lf, err := os.Create(filepath.Join(t.TempDir(), fmt.Sprintf("controller-%d.log", i)))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = lf, lf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); lf.Close() })
		out = append(out, cmd)
		if i == 0 { // the first holds the Lease before the standbys start
			deadline := time.Now().Add(time.Minute)
			for leaseHolder(e) == "" {
				if time.Now().After(deadline) {
					b, _ := os.ReadFile(lf.Name())
					t.Fatalf("the first vnet-controller did not take the Lease within a minute; its log:\n%s", b)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	return out
}

// killLeader SIGKILLs the process holding the Lease and returns how long until another holds it.
func killLeader(t *testing.T, e *env, ctls []*exec.Cmd) time.Duration {
	t.Helper()
	holder := func() string { return leaseHolder(e) }
	h := holder()
	victim := ctls[0] // took the Lease before the others started
	if h == "" {
		t.Fatal("no leader to kill")
	}
	_ = victim.Process.Signal(syscall.SIGKILL)
	_, _ = victim.Process.Wait()
	killed := time.Now()
	for holder() == h {
		if time.Since(killed) > 2*time.Minute {
			t.Fatal("no standby took the lease within 2 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(killed)
}

func leaseHolder(e *env) string {
	l := &coordv1.Lease{}
	if err := e.c.Get(e.ctx, client.ObjectKey{Namespace: "default", Name: "vnet-controller"}, l); err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// apiRequests sums apiserver_request_total from the API server's metrics.
func apiRequests(t *testing.T, api *APIServer) int {
	if api == nil {
		return 0
	}
	out, _, err := api.env.ControlPlane.KubeCtl().Run("get", "--raw", "/metrics")
	if err != nil {
		t.Logf("apiserver metrics: %v", err)
		return 0
	}
	total := 0.0
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			v, _ := strconv.ParseFloat(line[i+1:], 64)
			total += v
		}
	}
	return int(total)
}

func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range bytes.Split(b, []byte("\n")) {
		if f := strings.Fields(string(l)); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
