package bench

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vnet-cni/vnet-cni/plugin"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
)

type mockarmConfig = mockarm.Config

// burst: 200 concurrent ADDs on a node whose pool sits at min free (8), with every NIC
// write taking 1 s in mockarm.
func burst(ctx context.Context, c Config, r *Results) error {
	const pods, warm = 200, 8
	v, err := newVNet(c, "burst", nil, time.Second)
	if err != nil {
		return err
	}
	defer v.Close()
	n := v.Nodes[0]
	nss := make([]ns.NetNS, pods+warm)
	for i := range nss {
		if nss[i], err = n.NewPodNS(fmt.Sprint("b", i)); err != nil {
			return err
		}
	}
	for i := range warm { // take 8 of the initial 16: the pool is at min free
		if _, err := n.Attach(ctx, fmt.Sprint("warm", i), nss[pods+i], "warm"); err != nil {
			return err
		}
	}
	if err := settle(n.Pool, func(c *cnsv1.PoolCounts) bool { return c.GetAvailable() == warm && c.GetPending() == 0 }); err != nil {
		return err
	}
	writes := v.Mock.Stats().Writes
	var wg sync.WaitGroup
	var mu sync.Mutex
	start := time.Now()
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := n.Attach(ctx, fmt.Sprint("burst", i), nss[i], "burst"); err != nil {
				mu.Lock()
				r.Burst.Failed++
				if r.Burst.FirstErr == "" {
					r.Burst.FirstErr = err.Error()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	r.Burst = Burst{Pods: pods, Failed: r.Burst.Failed, FirstErr: r.Burst.FirstErr, Seconds: round(time.Since(start).Seconds()),
		NICWrites: v.Mock.Stats().Writes - writes}
	return nil
}

// settle waits until cond holds of cns's pool counts. A step charges cns's CPU to its ADDs, so
// the wait should add as little as it can: it follows the pool's events (WatchPool, each with
// the counts after it) and reads the pool only every half second, for the changes no event
// reports (a cooldown ending). (Reading it every 10 ms, as before, made no difference this
// machine could measure to cns's CPU per ADD; see the README's 30-at-once notes.)
func settle(pool cnsv1grpc.PoolServiceClient, cond func(*cnsv1.PoolCounts) bool) error {
	return settleEvery(pool, 500*time.Millisecond, cond)
}

func settleEvery(pool cnsv1grpc.PoolServiceClient, every time.Duration, cond func(*cnsv1.PoolCounts) bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := pool.WatchPool(ctx, &cnsv1.WatchPoolRequest{})
	if err != nil {
		return fmt.Errorf("watch the pool: %w", err)
	}
	if _, err := stream.Header(); err != nil { // cns sends it once subscribed: no event is missed after it
		return fmt.Errorf("watch the pool: %w", err)
	}
	events := make(chan *cnsv1.PoolCounts)
	go func() {
		defer close(events)
		for {
			ev, err := stream.Recv()
			if err != nil {
				return
			}
			select {
			case events <- ev.GetCounts():
			case <-ctx.Done():
				return
			}
		}
	}()
	var last *cnsv1.PoolCounts
	read := func() bool {
		if p, err := pool.GetPool(ctx, &cnsv1.GetPoolRequest{}); err == nil {
			last = p.GetCounts()
		}
		return last != nil && cond(last)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for done := read(); !done; {
		select {
		case c, ok := <-events:
			if !ok {
				events = nil // the stream ended: reads alone from here
				continue
			}
			if c != nil {
				last, done = c, cond(c)
			}
		case <-tick.C:
			done = read()
		case <-ctx.Done():
			return fmt.Errorf("pool did not settle within 30 s; last seen: %v", last)
		}
	}
	return nil
}

// memory: resident memory of an idle cns process holding 250 assigned addresses.
func memory(ctx context.Context, c Config, r *Results) error {
	v, err := newVNet(c, "mem", nil, 0)
	if err != nil {
		return err
	}
	defer v.Close()
	n := v.Nodes[0]
	for i := range 250 {
		if _, err := n.IPAM.RequestIPs(ctx, &cnsv1.RequestIPsRequest{ContainerId: fmt.Sprint("m", i), Ifname: "eth0"}); err != nil {
			return err
		}
	}
	if err := settle(n.Pool, func(c *cnsv1.PoolCounts) bool { return c.GetAssigned() == 250 && c.GetPending() == 0 }); err != nil {
		return err
	}
	// Idle: had the requests made cns busy, it returns their pages after a quiet second.
	st, err := idleStatus(n.PID(), idleWithin)
	if err != nil {
		return err
	}
	// The binary's pages (file-backed, shared with the page cache) apart from the heap,
	// stacks and runtime data (anonymous): they shrink for different reasons.
	r.CNSRSSMiB, r.CNSRSSAnonMiB, r.CNSRSSFileMiB = st["VmRSS:"], st["RssAnon:"], st["RssFile:"]
	return nil
}

// floor: the plugin's own datapath code, called in-process with a fixed address: what ADD
// and DEL would cost with no process start, no config parsing and no IPAM.
func floor(ctx context.Context, c Config, r *Results) error {
	v, err := newVNet(c, "floor", nil, 0)
	if err != nil {
		return err
	}
	defer v.Close()
	n := v.Nodes[0]
	pod, err := n.NewPodNS("floor")
	if err != nil {
		return err
	}
	ip := netip.MustParseAddr("10.240.200.1")
	host := plugin.HostVethName("floor", "eth0")
	var adds, dels []float64
	// Do's argument is the namespace the call came from; the node is n.NS.
	err = n.NS.Do(func(ns.NetNS) error {
		for i := range c.Iterations + 5 {
			start := time.Now()
			if err := plugin.BuildDatapath(n.NS, pod, "eth0", host, ip, 1500); err != nil {
				return err
			}
			a := ms(time.Since(start))
			start = time.Now()
			if err := plugin.RemoveDatapath(pod.Path(), "eth0", host); err != nil {
				return err
			}
			if i >= 5 {
				adds, dels = append(adds, a), append(dels, ms(time.Since(start)))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.FloorAddMs, r.FloorDelMs = quantile(adds, 0.5), quantile(dels, 0.5)
	return nil
}
