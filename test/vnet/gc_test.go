package vnet_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vnet-cni/vnet-cni/test/stack"
	"github.com/vnet-cni/vnet-cni/test/vnet"
)

// The cns process steers its collector (cns/gctune): GOGC 50 idle; while requests make it
// collect more than 8 times a second, a 16 MiB heap goal; back to 50 after the burst.
func TestCNSRaisesItsHeapGoalForABurstAndLowersItAfter(t *testing.T) {
	v := start(t, "gc", 1, "--cooldown=0", "--min-free=64", "--max-free=128", "--batch-size=32")
	n := v.Nodes[0]
	metric := func(name string) int {
		t.Helper()
		g, err := scrapeGauge(n, name)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	// waitFor polls twice a second: a scrape allocates in cns, and too many would keep it busy.
	waitFor := func(what string, ok func(gogc, goal int) bool, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			gogc, goal := metric("go_gc_gogc_percent"), metric("go_memstats_next_gc_bytes")
			if ok(gogc, goal) {
				t.Logf("%s: GOGC %d, heap goal %.1f MiB", what, gogc, float64(goal)/(1<<20))
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOGC %d, heap goal %.1f MiB after %s", what, gogc, float64(goal)/(1<<20), within)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	small := func(gogc, goal int) bool { return gogc == 50 && goal < 8<<20 }
	waitFor("idle", small, 10*time.Second)

	c, stop := context.WithCancel(ctx(t))
	defer stop()
	done := make(chan error, 1)
	go func() { done <- stack.Pairs(c, n.IPAM, "gc-", math.MaxInt) }()
	waitFor("during the burst", func(gogc, goal int) bool { return gogc > 50 && goal >= 14<<20 && goal <= 18<<20 }, 30*time.Second)
	stop()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("pairs: %v", err)
	}
	waitFor("after the burst", small, 10*time.Second)
}

// scrapeGauge reads one unlabelled metric from cns's /metrics, which listens on loopback in
// the node's namespace: the connection is dialled from a thread in that namespace.
func scrapeGauge(n *vnet.Node, name string) (int, error) {
	dial := func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
		err = n.NS.Do(func(ns.NetNS) error {
			conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	resp, err := client.Get("http://127.0.0.1:10092/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int(f), err
		}
	}
	return 0, fmt.Errorf("%s not in /metrics (%v)", name, sc.Err())
}
