package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
	type step struct {
		verb, net string
		pod       ns.NetNS
	}
	steps := []step{{"add", "ours", podOurs}, {"add", "ref", podRef}, {"del", "ours", podOurs}, {"del", "ref", podRef}}
	if c.Null != "" {
		steps = append(steps, step{"add", "null", podNull}, step{"del", "null", podNull})
	}
	var addO, addR, delO, delR, cpuO, cpuR, addN, cpuN []float64
	for i := range c.Iterations + 5 {
		var t, cpu [6]time.Duration
		for j, s := range steps {
			if t[j], cpu[j], err = cn.run(ctx, s.verb, s.net, s.pod); err != nil {
				return err
			}
		}
		if i < 5 { // warm-up: page cache, first scale-up
			continue
		}
		addO, addR, delO, delR = append(addO, ms(t[0])), append(addR, ms(t[1])), append(delO, ms(t[2])), append(delR, ms(t[3]))
		cpuO, cpuR = append(cpuO, ms(cpu[0])), append(cpuR, ms(cpu[1]))
		addN, cpuN = append(addN, ms(t[4])), append(cpuN, ms(cpu[4]))
	}
	r.AddMs = summary(addO, addR)
	r.DelMs = summary(delO, delR)
	r.AddCPUMs = summary(cpuO, cpuR)
	if c.Null != "" {
		wall, cpu := summary(addN, addR), summary(cpuN, cpuR)
		r.NullAddMs, r.NullAddCPUMs = &wall, &cpu
	}
	r.StateDisk, r.FsyncMs, err = stateDisk(filepath.Join(c.WorkDir, "lat"))
	return err
}

// concurrent: a node receives a ReplicaSet of 30 pods at once, warm pool: 30 cnitool ADDs
// start together; each ADD's own latency is kept. Rounds alternate ours and the reference,
// every pod is deleted between rounds.
func concurrent(ctx context.Context, c Config, r *Results) error {
	const pods, rounds = 30, 6
	// The warm pool holds at least the 30: min free above the burst, as an operator sizing
	// a pool for ReplicaSets of 30 would set it.
	v, err := newVNet(c, "conc", []string{"--min-free", "40", "--max-free", "80", "--batch-size", "32"}, 0)
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
	var ours, ref []float64
	var cpu [2]time.Duration // cnitool + plugins, for ours and ref
	var cnsTicks int64       // cns's CPU for ours' ADD bursts and the refill they cause
	quiet := func(p *cnsv1.PoolCounts) bool { return p.GetAvailable() >= pods && p.GetPending() == 0 }
	for round := range rounds {
		for _, network := range []string{"ours", "ref"} {
			// cns is quiet before every burst, so its refill never competes with the reference.
			if err := settle(cn.n.Pool, quiet); err != nil {
				return err
			}
			before, err := procTicks(cn.n.PID())
			if err != nil {
				return err
			}
			took, burstCPU, err := cn.burst(ctx, "add", network, nss)
			if err != nil {
				return err
			}
			if network == "ours" {
				if err := settle(cn.n.Pool, quiet); err != nil {
					return err
				}
			}
			after, err := procTicks(cn.n.PID())
			if err != nil {
				return err
			}
			if _, _, err := cn.burst(ctx, "del", network, nss); err != nil {
				return err
			}
			if round == 0 { // warm-up
				continue
			}
			if network == "ours" {
				ours = append(ours, took...)
				cpu[0] += burstCPU
				cnsTicks += after - before
			} else {
				ref = append(ref, took...)
				cpu[1] += burstCPU
			}
		}
	}
	r.Concurrent = Concurrent{Pods: pods, Rounds: rounds - 1,
		OursP50: quantile(ours, 0.5), OursP99: quantile(ours, 0.99), RefP50: quantile(ref, 0.5), RefP99: quantile(ref, 0.99)}
	r.Concurrent.RatioP99 = round(r.Concurrent.OursP99 / r.Concurrent.RefP99)
	n := float64(pods * (rounds - 1))
	r.Concurrent.OursCPU, r.Concurrent.RefCPU = ms(cpu[0])/n, ms(cpu[1])/n
	r.Concurrent.CNSCPU = float64(cnsTicks) * 1000 / clockTicks / n
	r.Concurrent.RatioCPU = round((r.Concurrent.OursCPU + r.Concurrent.CNSCPU) / r.Concurrent.RefCPU)
	return nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times (100 on Linux).
const clockTicks = 100

// procTicks returns the user + system CPU ticks a process has used, its exited threads
// included. A tick is 10 ms: over 150 ADDs the figure per ADD is good to about 0.1 ms.
func procTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces) start after its closing parenthesis;
	// utime and stime are fields 14 and 15, the 12th and 13th after it.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the command", pid, len(f))
	}
	u, err := strconv.ParseInt(f[11], 10, 64)
	if err != nil {
		return 0, err
	}
	st, err := strconv.ParseInt(f[12], 10, 64)
	return u + st, err
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
