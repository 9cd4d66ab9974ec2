// Package bench is `make bench`: warm ADD/DEL latency through cnitool against the reference
// ptp + host-local (alternating, same run), gRPC pairs/s against a cns process, a 200-pod
// burst on a slow cloud, cns memory with 250 addresses, and the kernel floor of the same
// datapath work done in one process. It prints a table and writes results.json.
package bench

import (
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/vnet-cni/vnet-cni/test/vnet"
)

// Config is the bench's command line.
type Config struct {
	BinDir     string // cns, vnet-cni
	RefDir     string // ptp, host-local (containernetworking/plugins)
	CNITool    string
	CRICtl     string // crictl, for the containerd step
	Pause      string // static pause binary, packed into the sandbox image
	Null       string // optional: a plugin that does nothing, the floor of any Go plugin
	NullCNS    string // optional: test/bench/nullcns, the floor of the gRPC pairs
	WorkDir    string
	Out        string // results.json
	Iterations int
	Only       string // run only the steps whose name contains this (development)
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
	FirstErr  string  `json:"first_error,omitempty"` // of a failed ADD, to tell load from a fault
}

// Concurrent is the 30-pods-at-once result: each ADD's latency in ms.
type Concurrent struct {
	Pods     int     `json:"pods"`
	Rounds   int     `json:"rounds"`
	OursP50  float64 `json:"ours_p50"`
	OursP99  float64 `json:"ours_p99"`
	RefP50   float64 `json:"ref_p50"`
	RefP99   float64 `json:"ref_p99"`
	RatioP99 float64 `json:"ratio_p99"`
	// CPU time per ADD (ms): cnitool and the plugins it ran, and for ours also cns's share.
	// With 30 ADDs on 2 cores the run is CPU-bound, so RatioP99 tends to RatioCPU.
	OursCPU  float64 `json:"ours_cpu_ms"`
	CNSCPU   float64 `json:"cns_cpu_ms"`
	RefCPU   float64 `json:"ref_cpu_ms"`
	RatioCPU float64 `json:"ratio_cpu"`
	// Null is the same bursts of a Go plugin that does nothing (--null), against the same
	// reference rounds: the floor any Go plugin exec'd by cnitool starts from.
	Null *ConcurrentFloor `json:"null,omitempty"`
}

// ConcurrentFloor is the do-nothing plugin's bursts: latency per ADD and CPU per ADD (ms).
type ConcurrentFloor struct {
	P50      float64 `json:"p50"`
	P99      float64 `json:"p99"`
	CPU      float64 `json:"cpu_ms"`
	RatioP99 float64 `json:"ratio_p99"`
	RatioCPU float64 `json:"ratio_cpu"`
}

// Parts are the pieces of one ADD/DEL priced apart (medians, ms).
type Parts struct {
	ExecOurs      float64 `json:"exec_vnet_cni"`   // process start + package init (CNI VERSION)
	ExecPTP       float64 `json:"exec_ptp"`        // the same for ptp
	ExecHostLocal float64 `json:"exec_host_local"` // and host-local
	ExecCNITool   float64 `json:"exec_cnitool"`    // cnitool's own start
	ExecTrue      float64 `json:"exec_true"`       // fork+exec of /bin/true
	DialCall      float64 `json:"dial_call"`       // fresh gRPC connection + one Status call
	RequestIPs    float64 `json:"request_ips"`     // as the plugin calls it (its own connection), fsynced commit included
	ReleaseIPs    float64 `json:"release_ips"`     // the same for ReleaseIPs
}

// Results is results.json.
type Results struct {
	Machine   string  `json:"machine"`
	Linkage   string  `json:"linkage"`    // how each compared plugin is linked (static or dynamic)
	StateDisk string  `json:"state_disk"` // file system under cns's --state in the latency run
	FsyncMs   float64 `json:"fsync_ms"`   // median fsync there
	AddMs     Latency `json:"add_ms"`
	AddCPUMs  Latency `json:"add_cpu_ms"` // CPU time of cnitool and the plugins per ADD
	// AddCNSCPUMs is cns's CPU per ADD of ours (mean): our IPAM's share, as host-local's is in
	// the reference's AddCPUMs. AddCPURatio compares ours with it against the reference.
	AddCNSCPUMs float64 `json:"add_cns_cpu_ms"`
	AddCPURatio float64 `json:"add_cpu_ratio"`
	// NullAddMs and NullAddCPUMs are a plugin that does nothing (Ours) against the reference:
	// the floor of any Go plugin exec'd through cnitool. Absent without --null.
	NullAddMs    *Latency   `json:"null_add_ms,omitempty"`
	NullAddCPUMs *Latency   `json:"null_add_cpu_ms,omitempty"`
	DelMs        Latency    `json:"del_ms"`
	Concurrent   Concurrent `json:"concurrent_add"`
	CRI          *CRI       `json:"cri,omitempty"`
	Parts        Parts      `json:"parts"`
	Pairs        Pairs      `json:"grpc_pairs"`
	Burst        Burst      `json:"burst"`
	APIBurst     APIBurst   `json:"api_burst"`
	CNSRSSMiB    float64    `json:"cns_rss_mib"`
	// CNSRSSAnonMiB and CNSRSSFileMiB split CNSRSSMiB: heap, stacks and runtime data, and the
	// pages of the cns binary mapped from the page cache.
	CNSRSSAnonMiB float64 `json:"cns_rss_anon_mib"`
	CNSRSSFileMiB float64 `json:"cns_rss_file_mib"`
	FloorAddMs    float64 `json:"floor_add_ms"`
	FloorDelMs    float64 `json:"floor_del_ms"`
	Iterations    int     `json:"iterations"`
}

// Run measures everything and writes the table to w.
func Run(ctx context.Context, w io.Writer, c Config) (*Results, error) {
	r := &Results{Machine: machine(), Iterations: c.Iterations, Linkage: linkage(c)}
	if err := os.RemoveAll(c.WorkDir); err != nil { // state of an earlier run would skew this one
		return r, err
	}
	steps := []struct {
		name string
		fn   func(context.Context, Config, *Results) error
	}{
		{"warm ADD/DEL vs ptp+host-local, cnitool", latency},
		{"30 ADDs at once vs ptp+host-local", concurrent},
		{"containerd RunPodSandbox/StopPodSandbox vs ptp+host-local", cri},
		{"parts of ADD/DEL", breakdown},
		{"gRPC pairs/s", pairs},
		{"burst of 200", burst},
		{"burst of 200 bound in the API server", apiBurst},
		{"cns memory", memory},
		{"kernel floor", floor},
	}
	for _, s := range steps {
		if c.Only != "" && !strings.Contains(s.name, c.Only) {
			continue
		}
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

// linkage says how the compared plugins are linked. A dynamically linked one pays the libc
// loader at every exec (about 2.5 ms each here), so a comparison is fair only between alike.
func linkage(c Config) string {
	var parts []string
	for _, b := range []string{filepath.Join(c.BinDir, "vnet-cni"), filepath.Join(c.RefDir, "ptp"), filepath.Join(c.RefDir, "host-local")} {
		kind := "unreadable"
		if f, err := elf.Open(b); err == nil {
			kind = "static"
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					kind = "dynamic"
				}
			}
			f.Close()
		}
		parts = append(parts, filepath.Base(b)+" "+kind)
	}
	return strings.Join(parts, ", ")
}

func newVNet(c Config, tag string, cnsArgs []string, latency time.Duration) (*vnet.VNet, error) {
	return vnet.New(vnet.Options{Prefix: vnet.TestPrefix(tag), Nodes: 1, BinDir: c.BinDir,
		WorkDir: filepath.Join(c.WorkDir, tag), CNSArgs: cnsArgs, Mock: func(m *mockarmConfig) { m.Latency = latency }, Log: nil})
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
	fmt.Fprintf(w, "\nmachine: %s; cns state on %s (fsync %.2f ms); %d iterations each, alternating; %s\n\n",
		r.Machine, r.StateDisk, r.FsyncMs, r.Iterations, r.Linkage)
	fmt.Fprintf(w, "| measure | ours | ptp + host-local | ratio | target |\n|---|---|---|---|---|\n")
	fmt.Fprintf(w, "| warm ADD median (p90), cnitool | %.1f ms (%.1f) | %.1f ms (%.1f) | %.2f | ≤ 0.8 |\n",
		r.AddMs.Ours, r.AddMs.OursP90, r.AddMs.Ref, r.AddMs.RefP90, r.AddMs.Ratio)
	fmt.Fprintf(w, "| warm DEL median (p90), cnitool | %.1f ms (%.1f) | %.1f ms (%.1f) | %.2f | ≤ 1.0 |\n",
		r.DelMs.Ours, r.DelMs.OursP90, r.DelMs.Ref, r.DelMs.RefP90, r.DelMs.Ratio)
	fmt.Fprintf(w, "| CPU per warm ADD median (p90): cnitool + plugins (+ cns, mean) | %.1f ms (%.1f) (+ %.2f) | %.1f ms (%.1f) | %.2f | |\n",
		r.AddCPUMs.Ours, r.AddCPUMs.OursP90, r.AddCNSCPUMs, r.AddCPUMs.Ref, r.AddCPUMs.RefP90, r.AddCPURatio)
	if r.NullAddMs != nil {
		fmt.Fprintf(w, "| floor: a Go plugin that does nothing, warm ADD median, wall / CPU | %.1f / %.1f ms | %.1f / %.1f ms | %.2f / %.2f | |\n",
			r.NullAddMs.Ours, r.NullAddCPUMs.Ours, r.NullAddMs.Ref, r.NullAddCPUMs.Ref, r.NullAddMs.Ratio, r.NullAddCPUMs.Ratio)
	}
	c := r.Concurrent
	fmt.Fprintf(w, "| %d ADDs at once, p50 / p99 per ADD (%d rounds) | %.1f / %.1f ms | %.1f / %.1f ms | %.2f (p99) | ≤ 0.7 |\n",
		c.Pods, c.Rounds, c.OursP50, c.OursP99, c.RefP50, c.RefP99, c.RatioP99)
	fmt.Fprintf(w, "| %d at once, CPU per ADD: cnitool + plugins (+ cns) | %.1f (+ %.1f) ms | %.1f ms | %.2f | |\n",
		c.Pods, c.OursCPU, c.CNSCPU, c.RefCPU, c.RatioCPU)
	if f := c.Null; f != nil {
		fmt.Fprintf(w, "| floor: a Go plugin that does nothing, %d at once, p50 / p99 (CPU per ADD) | %.1f / %.1f ms (%.1f) | %.1f / %.1f ms (%.1f) | %.2f / %.2f (p99 / CPU) | |\n",
			c.Pods, f.P50, f.P99, f.CPU, c.RefP50, c.RefP99, c.RefCPU, f.RatioP99, f.RatioCPU)
	}
	if r.CRI != nil {
		fmt.Fprintf(w, "| containerd RunPodSandbox median (p90), crictl | %.1f ms (%.1f) | %.1f ms (%.1f) | %.2f | ≤ 1.0 |\n",
			r.CRI.Run.Ours, r.CRI.Run.OursP90, r.CRI.Run.Ref, r.CRI.Run.RefP90, r.CRI.Run.Ratio)
		fmt.Fprintf(w, "| containerd StopPodSandbox median (p90), crictl | %.1f ms (%.1f) | %.1f ms (%.1f) | %.2f | |\n",
			r.CRI.Stop.Ours, r.CRI.Stop.OursP90, r.CRI.Stop.Ref, r.CRI.Stop.RefP90, r.CRI.Stop.Ratio)
	}
	printPairs(w, r.Pairs)
	fmt.Fprintf(w, "| burst: %d ADDs, pool at min free, 1 s per NIC write | %.2f s, %d failed, %d NIC writes | | | ≤ 3 s, 0, ≤ 3 |\n",
		r.Burst.Pods, r.Burst.Seconds, r.Burst.Failed, r.Burst.NICWrites)
	printAPIBurst(w, r)
	fmt.Fprintf(w, "| cns RSS, idle, 250 addresses assigned | %.1f MiB (anon %.1f, binary %.1f) | | | ≤ 30 MiB |\n",
		r.CNSRSSMiB, r.CNSRSSAnonMiB, r.CNSRSSFileMiB)
	p := r.Parts
	fmt.Fprintf(w, "\nparts (medians): exec+init vnet-cni %.2f ms, ptp %.2f, host-local %.2f, cnitool %.2f, /bin/true %.2f;\n",
		p.ExecOurs, p.ExecPTP, p.ExecHostLocal, p.ExecCNITool, p.ExecTrue)
	fmt.Fprintf(w, "  fresh gRPC connection + Status %.2f ms; RequestIPs %.2f ms; ReleaseIPs %.2f ms (each with its connection, fsynced);\n",
		p.DialCall, p.RequestIPs, p.ReleaseIPs)
	fmt.Fprintf(w, "  kernel floor (the plugin's netlink code in one process, no IPAM): ADD %.2f ms, DEL %.2f ms\n", r.FloorAddMs, r.FloorDelMs)
}

// printPairs writes the gRPC pairs row and its floors: ratio is cns's pairs/s over the floor's
// in the same round, the median of the rounds.
func printPairs(w io.Writer, pp Pairs) {
	fmt.Fprintf(w, "| RequestIPs+ReleaseIPs to the cns process, %d client goroutines on one grpc-go connection, unix socket, fsynced; median of %d rounds | %.0f pairs/s (rounds %s; CPU per pair: cns %.0f µs, clients %.0f; cns RSS %.1f MiB at peak, %.1f idle after) | | | ≥ 10,000 |\n",
		pp.Clients, pp.Rounds, pp.PerS, joinFloats(pp.RoundsPerS), pp.CNSCPUMicros, pp.ClientCPUMicros, pp.CNSPeakRSSMiB, pp.CNSIdleRSSMiB)
	floor := func(what string, f PairsFloor) {
		fmt.Fprintf(w, "| floor, same rounds: %s | %.0f pairs/s (rounds %s; CPU per pair: server %.0f µs, clients %.0f) | | %.2f | |\n",
			what, f.PerS, joinFloats(f.RoundsPerS), f.ServerCPUMicros, f.ClientCPUMicros, f.Ratio)
	}
	if pp.Tmpfs != nil {
		floor("the same cns with its state on tmpfs (an fsync costs nothing)", *pp.Tmpfs)
	} else {
		fmt.Fprintf(w, "| floor: the same cns with its state on tmpfs | not run: %s | | | |\n", pp.NoTmpfs)
	}
	if pp.Null != nil {
		floor("nullcns, grpc-go answering with no pool, no store, no metrics", *pp.Null)
	}
	if pp.Durable != nil {
		floor("nullcns making each call durable first, on the state's disk: its bytes in a file, one write and one fdatasync per group of calls", *pp.Durable)
	}
}

func joinFloats(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(parts, " / ")
}
