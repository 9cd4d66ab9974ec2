package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	"github.com/vnet-cni/vnet-cni/test/vnet"
)

// cniNode runs cnitool inside an emulated node against two networks: "ours" (vnet-cni and the
// node's cns) and "ref" (ptp + host-local v1.9.1, the reference).
type cniNode struct {
	c   Config
	n   *vnet.Node
	env []string
}

func newCNINode(c Config, v *vnet.VNet, tag string) (*cniNode, error) {
	n := v.Nodes[0]
	confDir := filepath.Join(c.WorkDir, tag, "net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return nil, err
	}
	ours := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"ours","plugins":[{"type":"vnet-cni","cnsSocket":%q,"releaseSpool":%q}]}`,
		n.Socket, filepath.Join(n.Dir, "spool"))
	ref := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"ref","plugins":[{"type":"ptp","ipMasq":false,"mtu":1500,
		"ipam":{"type":"host-local","subnet":"10.200.0.0/16","dataDir":%q}}]}`, filepath.Join(c.WorkDir, tag, "host-local"))
	confs := map[string]string{"10-ours.conflist": ours, "20-ref.conflist": ref}
	cniPath := c.BinDir + ":" + c.RefDir
	if c.Null != "" {
		confs["30-null.conflist"] = fmt.Sprintf(`{"cniVersion":"1.0.0","name":"null","plugins":[{"type":%q}]}`, filepath.Base(c.Null))
		cniPath += ":" + filepath.Dir(c.Null)
	}
	for name, conf := range confs {
		if err := os.WriteFile(filepath.Join(confDir, name), []byte(conf), 0o644); err != nil {
			return nil, err
		}
	}
	env := []string{"NETCONFPATH=" + confDir, "CNI_PATH=" + cniPath, "PATH=" + os.Getenv("PATH")}
	return &cniNode{c: c, n: n, env: env}, nil
}

// run times one cnitool call from the node namespace (cnitool inherits it). cpu is the CPU
// time of cnitool and the plugins it ran: wait4 reports a child's usage with that of the
// children it waited for.
func (cn *cniNode) run(ctx context.Context, verb, network string, pod ns.NetNS) (took, cpu time.Duration, err error) {
	var out bytes.Buffer
	err = cn.n.NS.Do(func(ns.NetNS) error {
		cmd := exec.CommandContext(ctx, cn.c.CNITool, verb, network, pod.Path())
		cmd.Env, cmd.Stdout, cmd.Stderr = cn.env, &out, &out
		start := time.Now()
		err := cmd.Run()
		took = time.Since(start)
		if cmd.ProcessState != nil {
			cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		}
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("cnitool %s %s: %w: %s", verb, network, err, out.String())
	}
	return took, cpu, nil
}

// latency alternates ours and the reference through cnitool in one node namespace, with cns
// started as `make run` starts it: default pool flags, bbolt state on disk.
func latency(ctx context.Context, c Config, r *Results) error {
	v, err := newVNet(c, "lat", nil, 0)
	if err != nil {
		return err
	}
	defer v.Close()
	cn, err := newCNINode(c, v, "lat")
	if err != nil {
		return err
	}
	podOurs, err := cn.n.NewPodNS("ours")
	if err != nil {
		return err
	}
	podRef, err := cn.n.NewPodNS("ref")
	if err != nil {
		return err
	}
	podNull, err := cn.n.NewPodNS("null")
	if err != nil {
		return err
	}
	nets := []string{"ours", "ref"}
	if c.Null != "" {
		nets = append(nets, "null")
	}
	pod := map[string]ns.NetNS{"ours": podOurs, "ref": podRef, "null": podNull}
	wall, cpu := map[string][]float64{}, map[string][]float64{}
	var cnsCPU time.Duration // cns's CPU over our ADDs: our IPAM's share, as host-local's is theirs
	settled := func(p *cnsv1.PoolCounts) bool { return p.GetPending() == 0 }
	for i := range c.Iterations + 5 {
		// The order rotates every round, so no plugin always runs right after another's
		// step (and a scale-up it set off).
		order := append(slices.Clone(nets[i%len(nets):]), nets[:i%len(nets)]...)
		for _, verb := range []string{"add", "del"} {
			for _, net := range order {
				if err := settle(cn.n.Pool, settled); err != nil { // no NIC write under anyone's step
					return err
				}
				before, err := cpuTime(cn.n.PID())
				if err != nil {
					return err
				}
				took, used, err := cn.run(ctx, verb, net, pod[net])
				if err != nil {
					return err
				}
				after, err := cpuTime(cn.n.PID())
				if err != nil {
					return err
				}
				if i < 5 { // warm-up: page cache, first scale-up
					continue
				}
				wall[verb+net] = append(wall[verb+net], ms(took))
				if verb == "add" {
					cpu[net] = append(cpu[net], ms(used))
					if net == "ours" {
						cnsCPU += after - before
					}
				}
			}
		}
	}
	r.AddMs = summary(wall["addours"], wall["addref"])
	r.DelMs = summary(wall["delours"], wall["delref"])
	r.AddCPUMs = summary(cpu["ours"], cpu["ref"])
	r.AddCNSCPUMs = ms(cnsCPU) / float64(c.Iterations)
	r.AddCPURatio = round((r.AddCPUMs.Ours + r.AddCNSCPUMs) / r.AddCPUMs.Ref)
	if c.Null != "" {
		w, u := summary(wall["addnull"], wall["addref"]), summary(cpu["null"], cpu["ref"])
		r.NullAddMs, r.NullAddCPUMs = &w, &u
	}
	r.StateDisk, r.FsyncMs, err = stateDisk(filepath.Join(c.WorkDir, "lat"))
	return err
}

// concurrent: a node receives a ReplicaSet of 30 pods at once, warm pool: 30 cnitool ADDs
// start together; each ADD's own latency is kept. Rounds alternate ours, the reference and,
// with --null, the plugin that does nothing; every pod is deleted between bursts.
func concurrent(ctx context.Context, c Config, r *Results) error {
	const pods, rounds, minFree = 30, 6, 40
	// The warm pool holds at least the 30: min free above the burst, as an operator sizing
	// a pool for ReplicaSets of 30 would set it.
	v, err := newVNet(c, "conc", []string{"--min-free", fmt.Sprint(minFree), "--max-free", "80", "--batch-size", "32"}, 0)
	if err != nil {
		return err
	}
	defer v.Close()
	cn, err := newCNINode(c, v, "conc")
	if err != nil {
		return err
	}
	nss := make([]ns.NetNS, pods)
	for i := range nss {
		if nss[i], err = cn.n.NewPodNS(fmt.Sprint("c", i)); err != nil {
			return err
		}
	}
	nets := []string{"ours", "ref"}
	if c.Null != "" {
		nets = append(nets, "null")
	}
	took := map[string][]float64{}
	cpu := map[string]time.Duration{} // cnitool + plugins
	var cnsCPU time.Duration          // cns's CPU for ours' ADD bursts and the refill they cause
	// Quiet: the pool is back at min free (40) with no NIC write in flight. Right after our
	// burst it is below min free until the refill's write has landed.
	quiet := func(p *cnsv1.PoolCounts) bool { return p.GetAvailable() >= minFree && p.GetPending() == 0 }
	for round := range rounds {
		for _, network := range nets {
			// cns is quiet before every burst, so its refill never competes with the others.
			if err := settle(cn.n.Pool, quiet); err != nil {
				return err
			}
			before, err := cpuTime(cn.n.PID())
			if err != nil {
				return err
			}
			lat, burstCPU, err := cn.burst(ctx, "add", network, nss)
			if err != nil {
				return err
			}
			if network == "ours" {
				if err := settle(cn.n.Pool, quiet); err != nil {
					return err
				}
			}
			after, err := cpuTime(cn.n.PID())
			if err != nil {
				return err
			}
			if _, _, err := cn.burst(ctx, "del", network, nss); err != nil {
				return err
			}
			if round == 0 { // warm-up
				continue
			}
			took[network] = append(took[network], lat...)
			cpu[network] += burstCPU
			if network == "ours" {
				cnsCPU += after - before
			}
		}
	}
	ours, ref := took["ours"], took["ref"]
	n := float64(pods * (rounds - 1))
	cc := Concurrent{Pods: pods, Rounds: rounds - 1,
		OursP50: quantile(ours, 0.5), OursP99: quantile(ours, 0.99), RefP50: quantile(ref, 0.5), RefP99: quantile(ref, 0.99),
		OursCPU: ms(cpu["ours"]) / n, RefCPU: ms(cpu["ref"]) / n, CNSCPU: ms(cnsCPU) / n}
	cc.RatioP99 = round(cc.OursP99 / cc.RefP99)
	cc.RatioCPU = round((cc.OursCPU + cc.CNSCPU) / cc.RefCPU)
	if null := took["null"]; len(null) > 0 {
		f := &ConcurrentFloor{P50: quantile(null, 0.5), P99: quantile(null, 0.99), CPU: ms(cpu["null"]) / n}
		f.RatioP99, f.RatioCPU = round(f.P99/cc.RefP99), round(f.CPU/cc.RefCPU)
		cc.Null = f
	}
	r.Concurrent = cc
	return nil
}

// cpuTime returns the CPU time a process's threads have used, to the nanosecond
// (/proc/<pid>/task/*/schedstat); a thread that exits in between is not counted (cns's
// threads live as long as it does).
func cpuTime(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return 0, fmt.Errorf("%s/%s/schedstat is empty", dir, t.Name())
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, err
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}

// burst runs verb for every pod at once and returns each call's latency in ms and the CPU
// time of all the calls.
func (cn *cniNode) burst(ctx context.Context, verb, network string, nss []ns.NetNS) ([]float64, time.Duration, error) {
	took := make([]float64, len(nss))
	cpus := make([]time.Duration, len(nss))
	errs := make([]error, len(nss))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, pod := range nss {
		wg.Go(func() {
			<-start
			d, c, err := cn.run(ctx, verb, network, pod)
			took[i], cpus[i], errs[i] = ms(d), c, err
		})
	}
	close(start)
	wg.Wait()
	var cpu time.Duration
	for i, err := range errs {
		if err != nil {
			return nil, 0, err
		}
		cpu += cpus[i]
	}
	return took, cpu, nil
}
