package vnet_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	"github.com/vnet-cni/vnet-cni/test/vnet"
)

// The cns process steers its collector (cns/gctune): GOGC 50 idle, a 16 MiB heap goal
// (GOGC 400 at its 2 MiB live heap) while requests pour in, back to 50 after the burst.
func TestCNSRaisesItsHeapGoalForABurstAndLowersItAfter(t *testing.T) {
	v := start(t, "gc", 1, "--cooldown=0")
	n := v.Nodes[0]
	gogc := func() int {
		t.Helper()
		g, err := scrapeGauge(n, "go_gc_gogc_percent")
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	waitFor := func(what string, want int, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for g := gogc(); g != want; g = gogc() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOGC %d after %s, want %d", what, g, within, want)
			}
			time.Sleep(500 * time.Millisecond) // a scrape allocates in cns: not too often
		}
	}
	waitFor("idle", 50, 5*time.Second)

	c, stop := context.WithCancel(ctx(t))
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			id := fmt.Sprint("gc-", i)
			for c.Err() == nil {
				_, err := n.IPAM.RequestIPs(c, &cnsv1.RequestIPsRequest{ContainerId: id, Ifname: "eth0"})
				if err == nil {
					_, err = n.IPAM.ReleaseIPs(c, &cnsv1.ReleaseIPsRequest{ContainerId: id, Ifname: "eth0"})
				}
				if err != nil && c.Err() == nil {
					errs <- err
					return
				}
			}
		})
	}
	waitFor("during the burst", 400, 20*time.Second)
	stop()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("pair: %v", err)
	}
	waitFor("after the burst", 50, 10*time.Second)
}

// scrapeGauge reads one unlabelled metric from cns's /metrics, which listens on loopback in
// the node's namespace: the connection is made from a thread in that namespace.
func scrapeGauge(n *vnet.Node, name string) (int, error) {
	var conn net.Conn
	if err := n.NS.Do(func(ns.NetNS) (err error) {
		conn, err = net.DialTimeout("tcp", "127.0.0.1:10092", 2*time.Second)
		return err
	}); err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("GET /metrics HTTP/1.0\r\nHost: cns\r\n\r\n")); err != nil {
		return 0, err
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
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
