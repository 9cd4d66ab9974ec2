package cluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

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

// waitedOnCloud: a request that took longer waited for a NIC write (each takes 500 ms here);
// one served from the warm pool takes milliseconds.
const waitedOnCloud = 250 * time.Millisecond

// benchLease is the controllers' lease duration in the bench (renew deadline 70 %, retry 1 s).
const benchLease = 10 * time.Second

type result struct {
	nodes, warm, failed, waited       int
	armWrites, throttled              int
	perNodeEvent, warmSeconds, apiRPS float64
	rssMiB                            float64
	takeover                          time.Duration
	lostAddrs, overHeld, precondition int
	restarts                          int
}

func (r result) String() string {
	s := fmt.Sprintf("nodes=%d warm=%d failed=%d arm_writes=%d writes_per_node_event=%.2f throttled_429=%d warm_seconds=%.1f apiserver_rps=%.1f controller_rss_mib=%.0f waited_on_cloud=%d",
		r.nodes, r.warm, r.failed, r.armWrites, r.perNodeEvent, r.throttled, r.warmSeconds, r.apiRPS, r.rssMiB, r.waited)
	if r.takeover > 0 {
		s += fmt.Sprintf(" leader_takeover_seconds=%.1f lease_seconds=%.0f lost_addresses=%d nodes_over_requested=%d writes_refused_412=%d controller_restarts=%d",
			r.takeover.Seconds(), benchLease.Seconds(), r.lostAddrs, r.overHeld, r.precondition, r.restarts)
	}
	return s
}

func benchMode(t *testing.T, mode string, n, pods, waves int) result {
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler) // a thousand nodes' warnings would swamp the figures
	mc := mockarm.DefaultConfig()
	mc.Latency = 500 * time.Millisecond
	// ARM's bucket (200, 10/s) unless scaled down to try 1,000 nodes' dynamics with fewer nodes.
	mc.WriteBurst, mc.WriteRate = envInt("WRITE_BURST", mc.WriteBurst), float64(envInt("WRITE_RATE", int(mc.WriteRate)))
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
	var ctls *fleet
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
		if err := CreateNodes(ctx, c, mock, StandaloneVM, names); err != nil {
			t.Fatal(err)
		}
		// A lease with room for a loaded machine (an API server slower than the renew deadline
		// costs a leader its Lease); the failover tests use 4 s.
		ctls = newFleet(t, e, 2, "--write-burst", strconv.Itoa(mc.WriteBurst), "--write-rate", strconv.Itoa(int(mc.WriteRate)),
			"--lease-duration", benchLease.String(), "--renew-deadline", (benchLease * 7 / 10).String(), "--retry-period", "1s")
		sctx, stop := context.WithCancel(ctx)
		defer stop()
		go ctls.supervise(sctx)
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
	within := envDuration("WARM_WITHIN", 10*time.Minute) // the figures say how many made it
	sampleRSS := func() {
		if ctls != nil {
			r.rssMiB = max(r.rssMiB, ctls.maxRSS())
		}
	}
	waitWarm := func() int {
		deadline := time.Now().Add(within)
		for {
			sampleRSS()
			w := 0
			for _, nd := range nodesUp {
				if warm(nd) {
					w++
				}
			}
			if w == n || time.Now().After(deadline) {
				return w
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	r.warm = waitWarm()
	r.warmSeconds = time.Since(start).Seconds()
	var failed, waited atomic.Int32
	granted := make([][]string, n)
	per := (pods + waves - 1) / waves
	for w := range waves {
		if w > 0 { // the next wave comes once the fleet has refilled its warm buffers
			waitWarm()
		}
		if mode == "crd" && w == waves/2 {
			r.takeover = ctls.killLeader(e)
		}
		for i, nd := range nodesUp {
			wg.Go(func() {
				for p := w * per; p < min(pods, (w+1)*per); p++ {
					t0 := time.Now()
					g, err := nd.Request(ctx, p)
					if err != nil {
						failed.Add(1)
						continue
					}
					if time.Since(t0) > waitedOnCloud {
						waited.Add(1)
					}
					granted[i] = append(granted[i], g.Entry.Addr.String())
				}
			})
		}
		wg.Wait()
		sampleRSS()
	}
	r.failed, r.waited = int(failed.Load()), int(waited.Load())
	elapsed := time.Since(start)
	st := mock.Stats()
	r.armWrites, r.throttled, r.precondition = st.Writes, st.Throttled, st.PreconditionFailed
	r.perNodeEvent = float64(st.Writes) / float64(n*(1+waves))
	if api != nil {
		r.apiRPS = float64(apiRequests(t, api)-reqBefore) / elapsed.Seconds()
		if ctls != nil {
			r.rssMiB = max(r.rssMiB, ctls.maxRSS())
			ctls.mu.Lock()
			r.restarts = ctls.restarts
			ctls.mu.Unlock()
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
