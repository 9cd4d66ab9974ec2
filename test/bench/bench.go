// Package bench is `make bench`: warm ADD/DEL latency through cnitool against the reference
// ptp + host-local (alternating, same run), gRPC pairs/s, a 200-pod burst on a slow cloud,
// cns memory with 250 addresses, and the kernel floor of the same datapath work done in one
// process. It prints a table and writes results.json.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vnet-cni/vnet-cni/test/vnet"
)

// Config is the bench's command line.
type Config struct {
	BinDir     string // cns, vnet-cni
	RefDir     string // ptp, host-local (containernetworking/plugins)
	CNITool    string
	WorkDir    string
	Out        string // results.json
	Iterations int
}

// Latency is a distribution summary in milliseconds.
type Latency struct {
	Ours    float64 `json:"ours"`
	Ref     float64 `json:"ref"`
	Ratio   float64 `json:"ratio"`
	OursP90 float64 `json:"ours_p90"`
	RefP90  float64 `json:"ref_p90"`
}

// Burst is the 200-pod burst result.
type Burst struct {
	Pods      int     `json:"pods"`
	Failed    int     `json:"failed"`
	Seconds   float64 `json:"seconds"`
	NICWrites int     `json:"nic_writes"`
}

// Results is results.json.
type Results struct {
	Machine    string   `json:"machine"`
	AddMs      Latency  `json:"add_ms"`
	DelMs      Latency  `json:"del_ms"`
	PairsPerS  float64  `json:"pairs_per_s"`
	Burst      Burst    `json:"burst"`
	APIBurst   APIBurst `json:"api_burst"`
	CNSRSSMiB  float64  `json:"cns_rss_mib"`
	FloorAddMs float64  `json:"floor_add_ms"`
	FloorDelMs float64  `json:"floor_del_ms"`
	Iterations int      `json:"iterations"`
}

// Run measures everything and writes the table to w.
func Run(ctx context.Context, w io.Writer, c Config) (*Results, error) {
	r := &Results{Machine: machine(), Iterations: c.Iterations}
	if err := os.RemoveAll(c.WorkDir); err != nil { // state of an earlier run would skew this one
		return r, err
	}
	steps := []struct {
		name string
		fn   func(context.Context, Config, *Results) error
	}{
		{"warm ADD/DEL vs ptp+host-local", latency},
		{"gRPC pairs/s", pairs},
		{"burst of 200", burst},
		{"burst of 200 bound in the API server", apiBurst},
		{"cns memory", memory},
		{"kernel floor", floor},
	}
	for _, s := range steps {
		fmt.Fprintf(w, "… %s\n", s.name)
		if err := s.fn(ctx, c, r); err != nil {
			return r, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	printTable(w, r)
	b, _ := json.MarshalIndent(r, "", "  ")
	if err := os.MkdirAll(filepath.Dir(c.Out), 0o755); err != nil {
		return r, err
	}
	return r, os.WriteFile(c.Out, append(b, '\n'), 0o644)
}

func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		mem = fmt.Sprintf(", %.0f GiB", float64(kb)/1024/1024)
	}
	return fmt.Sprintf("%d cores (%s)%s, %s", runtime.NumCPU(), cpu, mem, runtime.Version())
}

func newVNet(c Config, tag string, cnsArgs []string, latency time.Duration) (*vnet.VNet, error) {
	return vnet.New(vnet.Options{Prefix: vnet.TestPrefix(tag), Nodes: 1, BinDir: c.BinDir,
		WorkDir: filepath.Join(c.WorkDir, tag), CNSArgs: cnsArgs, Mock: func(m *mockarmConfig) { m.Latency = latency }, Log: nil})
}

// latency alternates ours and the reference through cnitool in one node namespace.
func latency(ctx context.Context, c Config, r *Results) error {
	v, err := newVNet(c, "lat", []string{"--cooldown", "1s", "--min-free", "16", "--max-free", "48"}, 0)
	if err != nil {
		return err
	}
	defer v.Close()
	n := v.Nodes[0]
	confDir := filepath.Join(c.WorkDir, "lat", "net.d")
	os.MkdirAll(confDir, 0o755)
	ours := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"ours","plugins":[{"type":"vnet-cni","cnsSocket":%q,"releaseSpool":%q}]}`,
		n.Socket, filepath.Join(n.Dir, "spool"))
	ref := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"ref","plugins":[{"type":"ptp","ipMasq":false,"mtu":1500,
		"ipam":{"type":"host-local","subnet":"10.200.0.0/16","dataDir":%q}}]}`, filepath.Join(c.WorkDir, "lat", "host-local"))
	os.WriteFile(filepath.Join(confDir, "10-ours.conflist"), []byte(ours), 0o644)
	os.WriteFile(filepath.Join(confDir, "20-ref.conflist"), []byte(ref), 0o644)
	podOurs, err := n.NewPodNS("ours")
	if err != nil {
		return err
	}
	podRef, err := n.NewPodNS("ref")
	if err != nil {
		return err
	}
	env := []string{"NETCONFPATH=" + confDir, "CNI_PATH=" + c.BinDir + ":" + c.RefDir, "PATH=" + os.Getenv("PATH")}
	run := func(args ...string) (time.Duration, error) {
		var out bytes.Buffer
		var took time.Duration
		err := n.NS.Do(func(ns.NetNS) error {
			cmd := exec.CommandContext(ctx, c.CNITool, args...)
			cmd.Env, cmd.Stdout, cmd.Stderr = env, &out, &out
			start := time.Now()
			err := cmd.Run()
			took = time.Since(start)
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("cnitool %v: %w: %s", args, err, out.String())
		}
		return took, nil
	}
	var addO, addR, delO, delR []float64
	for i := range c.Iterations + 5 {
		a1, err := run("add", "ours", podOurs.Path())
		if err != nil {
			return err
		}
		a2, err := run("add", "ref", podRef.Path())
		if err != nil {
			return err
		}
		d1, err := run("del", "ours", podOurs.Path())
		if err != nil {
			return err
		}
		d2, err := run("del", "ref", podRef.Path())
		if err != nil {
			return err
		}
		if i < 5 { // warm-up: page cache, first scale-up
			continue
		}
		addO, addR, delO, delR = append(addO, ms(a1)), append(addR, ms(a2)), append(delO, ms(d1)), append(delR, ms(d2))
	}
	r.AddMs = summary(addO, addR)
	r.DelMs = summary(delO, delR)
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func quantile(xs []float64, q float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1)+0.5)]
}

func summary(ours, ref []float64) Latency {
	l := Latency{Ours: quantile(ours, 0.5), Ref: quantile(ref, 0.5), OursP90: quantile(ours, 0.9), RefP90: quantile(ref, 0.9)}
	l.Ratio = round(l.Ours / l.Ref)
	return l
}

func round(x float64) float64 { return float64(int(x*100+0.5)) / 100 }

func printTable(w io.Writer, r *Results) {
	fmt.Fprintf(w, "\nmachine: %s; %d iterations each, alternating\n\n", r.Machine, r.Iterations)
	fmt.Fprintf(w, "| measure | ours | reference | ratio | target |\n|---|---|---|---|---|\n")
	fmt.Fprintf(w, "| warm ADD median (p90), cnitool | %.1f ms (%.1f) | %.1f ms (%.1f) ptp+host-local | %.2f | ≤ 0.5 |\n",
		r.AddMs.Ours, r.AddMs.OursP90, r.AddMs.Ref, r.AddMs.RefP90, r.AddMs.Ratio)
	fmt.Fprintf(w, "| warm DEL median (p90), cnitool | %.1f ms (%.1f) | %.1f ms (%.1f) ptp+host-local | %.2f | ≤ 0.7 |\n",
		r.DelMs.Ours, r.DelMs.OursP90, r.DelMs.Ref, r.DelMs.RefP90, r.DelMs.Ratio)
	fmt.Fprintf(w, "| RequestIPs+ReleaseIPs, 64 clients, unix socket, fsynced | %.0f pairs/s | | | ≥ 5,000 |\n", r.PairsPerS)
	fmt.Fprintf(w, "| burst: %d ADDs, pool at min free, 1 s per NIC write | %.2f s, %d failed, %d NIC writes | | | ≤ 3 s, 0, ≤ 3 |\n",
		r.Burst.Pods, r.Burst.Seconds, r.Burst.Failed, r.Burst.NICWrites)
	printAPIBurst(w, r)
	fmt.Fprintf(w, "| cns RSS, idle, 250 addresses assigned | %.1f MiB | | | ≤ 30 MiB |\n", r.CNSRSSMiB)
	fmt.Fprintf(w, "| kernel floor (same netlink work, one process, no IPAM) | ADD %.1f ms, DEL %.1f ms | | ADD %.2f× floor | |\n",
		r.FloorAddMs, r.FloorDelMs, r.AddMs.Ours/max(r.FloorAddMs, 0.001))
}
