package bench

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
	"github.com/vnet-cni/vnet-cni/test/k8s"
	"github.com/vnet-cni/vnet-cni/test/stack"
)

// Pairs is the gRPC pairs/s result: RequestIPs+ReleaseIPs pairs against a cns process, and in
// the same rounds against three floors: the same cns with its state on tmpfs, and nullcns
// answering at once and making each call durable first.
type Pairs struct {
	Clients int `json:"clients"`
	Rounds  int `json:"rounds"`
	Warmup  int `json:"warmup"` // pairs made first in each run and not counted (at least pairsWarmupFor): the fewest of the cns runs
	Pairs   int `json:"pairs"`  // pairs measured in each run
	// PerS is the median of the rounds (RoundsPerS) against cns with its state on disk.
	PerS       float64   `json:"per_s"`
	RoundsPerS []float64 `json:"rounds_per_s"`
	// CNSCPUMicros is cns's CPU time per measured pair (all its threads), median of the rounds.
	CNSCPUMicros float64 `json:"cns_cpu_us"`
	// ClientCPUMicros is the bench process's CPU time per measured pair (getrusage): the client
	// goroutines, grpc-go's client side and the bench's Go runtime, and mockarm, which serves
	// cns's periodic NIC reads from this process (the pool is warm: no NIC write).
	ClientCPUMicros float64 `json:"client_cpu_us"`
	// NICWrites during the measured pairs of every cns run (disk and tmpfs): 0 when the warm-ups
	// left the pools big enough, so no run paid a cloud call.
	NICWrites     int     `json:"nic_writes"`
	CNSPeakRSSMiB float64 `json:"cns_peak_rss_mib"` // VmHWM, highest of the rounds: reached during the pairs
	CNSIdleRSSMiB float64 `json:"cns_idle_rss_mib"` // after the last round, once it stops falling (at most idleWithin later)
	// Tmpfs is the same cns with its state on tmpfs, where an fsync costs nothing: what the
	// disk takes from PerS. Absent when /dev/shm is not a tmpfs (NoTmpfs says so).
	Tmpfs   *PairsFloor `json:"tmpfs,omitempty"`
	NoTmpfs string      `json:"no_tmpfs,omitempty"`
	// Null is nullcns, grpc-go answering the same calls with no pool, no store and no metrics,
	// under cns's collector policy: the floor of any cns serving them. Absent without --null-cns.
	Null *PairsFloor `json:"null,omitempty"`
	// Durable is nullcns making each call durable first, on the disk of cns's state: the
	// call's bytes in a file, one write and one fdatasync per group of calls. The floor of any
	// cns that answers a call only once it is on disk. Absent without --null-cns.
	Durable *PairsFloor `json:"durable,omitempty"`
}

// PairsFloor is a server the pairs also ran against, medians of the rounds.
// Ratio is the median over the rounds of cns's pairs/s (state on disk) over this server's in
// the same round.
type PairsFloor struct {
	PerS            float64   `json:"per_s"`
	RoundsPerS      []float64 `json:"rounds_per_s"`
	ServerCPUMicros float64   `json:"server_cpu_us"`
	ClientCPUMicros float64   `json:"client_cpu_us"`
	Ratio           float64   `json:"ratio"`
}

const (
	pairsRounds    = 3
	pairsWarmup    = 1_000           // a round of the warm-up
	pairsWarmupFor = 2 * time.Second // cns's collector settles to the load within a second (cns/gctune)
	pairsMeasured  = 40_000
	pairsWithin    = 5 * time.Minute // one run: at 1,000 pairs/s it would take 42 s
	idleWithin     = 5 * time.Second // longest wait for cns's RSS to stop falling (idleStatus)
	// tmpfsMagic is statfs's f_type of a tmpfs.
	tmpfsMagic = 0x01021994
	// pairsShm holds the tmpfs runs' state; a run killed before it removed it leaves it for the next.
	pairsShm = "/dev/shm/vnet-bench-pairs"
)

// pairsRun is one run of the pairs against one server.
type pairsRun struct {
	perS, serverCPU, clientCPU float64
	warmup, nicWrites          int
	peakRSS, idleRSS           float64 // idleRSS: only when asked (idleStatus takes seconds)
}

func (p pairsRun) rate() float64   { return p.perS }
func (p pairsRun) server() float64 { return p.serverCPU }
func (p pairsRun) client() float64 { return p.clientCPU }

// pairs runs the loop of `go test -bench RequestReleasePairs ./cns/` (stack.Pairs) against a
// cns process started as `make run` starts it, state on disk, with the in-process benchmark's
// pool knobs: no cooldown, so a released address is reusable at once, and a warm pool of at
// least 96, so no cloud call is on the path. Each of pairsRounds rounds also runs it against
// the same cns with its state on tmpfs and against nullcns (with --null-cns) answering at
// once and making each call durable first, all in an order that rotates every round, so a
// machine that slows down weighs on all of them.
func pairs(ctx context.Context, c Config, r *Results) error {
	servers := []string{"disk"}
	noTmpfs, err := tmpfsDir()
	switch {
	case err != nil:
		return err
	case noTmpfs == "":
		servers = append(servers, "tmpfs")
		defer os.RemoveAll(pairsShm)
	}
	if c.NullCNS != "" {
		servers = append(servers, "null", "durable")
	}
	runs := map[string][]pairsRun{}
	for rnd := range pairsRounds {
		for i := range servers {
			server := servers[(rnd+i)%len(servers)]
			var run pairsRun
			switch server {
			case "disk":
				run, err = pairsAgainstCNS(ctx, c, fmt.Sprintf("pairs-%d", rnd), nil, rnd == pairsRounds-1)
			case "tmpfs":
				run, err = pairsOnTmpfs(ctx, c, rnd)
			case "null":
				run, err = pairsAgainstNull(ctx, c, filepath.Join(c.WorkDir, fmt.Sprintf("pairs-null-%d", rnd)), false)
			case "durable": // its log beside cns's state, on the same disk
				run, err = pairsAgainstNull(ctx, c, filepath.Join(c.WorkDir, fmt.Sprintf("pairs-durable-%d", rnd)), true)
			}
			if err != nil {
				return fmt.Errorf("%s, round %d: %w", server, rnd+1, err)
			}
			runs[server] = append(runs[server], run)
		}
	}
	disk := runs["disk"]
	r.Pairs = Pairs{Clients: stack.PairsClients, Rounds: pairsRounds, Pairs: pairsMeasured,
		PerS: median(disk, pairsRun.rate), RoundsPerS: collect(disk, pairsRun.rate),
		CNSCPUMicros: median(disk, pairsRun.server), ClientCPUMicros: median(disk, pairsRun.client),
		CNSPeakRSSMiB: slices.Max(collect(disk, func(p pairsRun) float64 { return p.peakRSS })),
		CNSIdleRSSMiB: disk[len(disk)-1].idleRSS, NoTmpfs: noTmpfs, Warmup: disk[0].warmup}
	for _, p := range append(slices.Clone(disk), runs["tmpfs"]...) { // every cns run
		r.Pairs.NICWrites += p.nicWrites
		r.Pairs.Warmup = min(r.Pairs.Warmup, p.warmup)
	}
	r.Pairs.Tmpfs, r.Pairs.Null, r.Pairs.Durable = floorOf(runs["tmpfs"], disk), floorOf(runs["null"], disk), floorOf(runs["durable"], disk)
	return nil
}

// pairsOnTmpfs runs the pairs against a cns whose state is on tmpfs, removed after the run.
func pairsOnTmpfs(ctx context.Context, c Config, rnd int) (pairsRun, error) {
	dir := filepath.Join(pairsShm, strconv.Itoa(rnd))
	defer os.RemoveAll(dir)
	return pairsAgainstCNS(ctx, c, fmt.Sprintf("pairs-tmpfs-%d", rnd), []string{"--state=" + filepath.Join(dir, "cns.db")}, false)
}

// pairsAgainstCNS starts a cns process (cnsArgs after the step's pool flags), waits for its
// warm pool and runs the pairs against it; with idle it also waits for cns's RSS to settle.
func pairsAgainstCNS(ctx context.Context, c Config, tag string, cnsArgs []string, idle bool) (pairsRun, error) {
	v, err := newVNet(c, tag, append([]string{"--cooldown=0", "--min-free=96", "--max-free=200", "--batch-size=32"}, cnsArgs...), 0)
	if err != nil {
		return pairsRun{}, err
	}
	defer v.Close()
	n := v.Nodes[0]
	if err := settle(n.Pool, func(c *cnsv1.PoolCounts) bool { return c.GetAvailable() >= 96 }); err != nil {
		return pairsRun{}, err
	}
	writes := v.Mock.Stats().Writes
	run, err := measurePairs(ctx, n.IPAM, n.PID())
	if err != nil {
		return run, err
	}
	run.nicWrites = v.Mock.Stats().Writes - writes
	after, err := procStatusMiB(n.PID())
	if err != nil {
		return run, err
	}
	run.peakRSS = after["VmHWM:"]
	if idle {
		st, err := idleStatus(n.PID(), idleWithin)
		if err != nil {
			return run, err
		}
		run.idleRSS = st["VmRSS:"]
	}
	return run, nil
}

// pairsAgainstNull starts c.NullCNS on a socket in dir, with durable its log in dir too, and
// runs the pairs against it. dir is removed after the run.
func pairsAgainstNull(ctx context.Context, c Config, dir string, durable bool) (pairsRun, error) {
	dir, err := filepath.Abs(dir) // a relative path would be read as the target's authority
	if err != nil {
		return pairsRun{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return pairsRun{}, err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "null.sock")
	args := []string{sock}
	if durable {
		args = []string{"--log", filepath.Join(dir, "null.log"), sock}
	}
	cmd := exec.Command(c.NullCNS, args...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlives the bench
	if err := cmd.Start(); err != nil {
		return pairsRun{}, fmt.Errorf("start nullcns: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill(); <-exited }()
	if err := waitListening(sock, exited, 10*time.Second); err != nil {
		return pairsRun{}, fmt.Errorf("nullcns: %w", err)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return pairsRun{}, err
	}
	defer conn.Close()
	return measurePairs(ctx, cnsv1grpc.NewIPAMServiceClient(conn), cmd.Process.Pid)
}

// waitListening waits until the unix socket at path accepts a connection, the process
// serving it exits (its Wait's result on exited, put back for the caller), or within passes.
func waitListening(path string, exited chan error, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		conn, err := net.Dial("unix", path)
		if err == nil {
			return conn.Close()
		}
		select {
		case werr := <-exited:
			exited <- werr
			return fmt.Errorf("exited before it listened on %s: %v", path, werr)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after %s: %w", path, within, err)
		}
	}
}

// measurePairs makes pairs through ipam for at least pairsWarmupFor, not counted, then
// pairsMeasured counted, and reads the server's (pid) CPU and this process's around them.
func measurePairs(ctx context.Context, ipam cnsv1grpc.IPAMServiceClient, pid int) (pairsRun, error) {
	ctx, cancel := context.WithTimeout(ctx, pairsWithin)
	defer cancel()
	// The load generator should not be what it measures: a lighter GC in this process leaves
	// the two cores to the server (its client CPU is reported apart).
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	var run pairsRun
	for start := time.Now(); time.Since(start) < pairsWarmupFor; run.warmup += pairsWarmup {
		if err := stack.Pairs(ctx, ipam, "warm-", pairsWarmup); err != nil {
			return run, fmt.Errorf("warm-up: %w", err)
		}
	}
	cpu0, err := cpuOfBoth(pid)
	if err != nil {
		return run, err
	}
	start := time.Now()
	if err := stack.Pairs(ctx, ipam, "bench-", pairsMeasured); err != nil {
		return run, err
	}
	took := time.Since(start)
	cpu1, err := cpuOfBoth(pid)
	if err != nil {
		return run, err
	}
	perPair := func(d time.Duration) float64 { return round(float64(d) / float64(time.Microsecond) / pairsMeasured) }
	run.perS, run.serverCPU, run.clientCPU = math.Round(pairsMeasured/took.Seconds()), perPair(cpu1[0]-cpu0[0]), perPair(cpu1[1]-cpu0[1])
	return run, nil
}

// floorOf summarises the runs against a floor server beside those against cns on disk, run
// for run (the same rounds); nil when the floor did not run.
func floorOf(runs, disk []pairsRun) *PairsFloor {
	if len(runs) == 0 {
		return nil
	}
	f := &PairsFloor{PerS: median(runs, pairsRun.rate), RoundsPerS: collect(runs, pairsRun.rate),
		ServerCPUMicros: median(runs, pairsRun.server), ClientCPUMicros: median(runs, pairsRun.client)}
	ratios := make([]float64, len(runs))
	for i := range runs {
		ratios[i] = disk[i].perS / runs[i].perS
	}
	f.Ratio = round(quantile(ratios, 0.5))
	return f
}

func collect(runs []pairsRun, f func(pairsRun) float64) []float64 {
	out := make([]float64, len(runs))
	for i, p := range runs {
		out[i] = f(p)
	}
	return out
}

func median(runs []pairsRun, f func(pairsRun) float64) float64 {
	return quantile(collect(runs, f), 0.5)
}

// tmpfsDir makes pairsShm afresh for the state of the tmpfs runs, and returns why not (with
// no error) when /dev/shm is not a tmpfs: that floor is then left out.
func tmpfsDir() (whyNot string, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil {
		return fmt.Sprintf("statfs /dev/shm: %v", err), nil
	}
	if st.Type != tmpfsMagic {
		return fmt.Sprintf("/dev/shm is not a tmpfs (f_type %#x)", st.Type), nil
	}
	if err := os.RemoveAll(pairsShm); err != nil { // a killed run's
		return "", err
	}
	return "", os.Mkdir(pairsShm, 0o700)
}

// cpuOfBoth is the CPU time cns (pid) has used, and this process.
func cpuOfBoth(pid int) ([2]time.Duration, error) {
	cns, err := cpuTime(pid)
	if err != nil {
		return [2]time.Duration{}, err
	}
	self, err := stack.ProcessCPU()
	return [2]time.Duration{cns, self}, err
}

// idleStatus polls a process's /proc status until its VmRSS has not fallen for two seconds,
// or within has passed, and returns the reading with the lowest VmRSS. cns returns a burst's
// pages a quiet second after it (cns/gctune); the background scavenger's smaller returns may
// keep the poll going to within.
func idleStatus(pid int, within time.Duration) (map[string]float64, error) {
	var low map[string]float64
	lowAt := time.Now()
	var err error
	_ = k8s.Poll(within, func() bool { // at the deadline the lowest so far is the answer
		var st map[string]float64
		if st, err = procStatusMiB(pid); err != nil {
			return true
		}
		if low == nil || st["VmRSS:"] < low["VmRSS:"] {
			low, lowAt = st, time.Now()
		}
		return time.Since(lowAt) >= 2*time.Second
	})
	return low, err
}

// procStatusMiB reads the kB fields of /proc/<pid>/status ("VmRSS:", "RssAnon:", …) in MiB.
func procStatusMiB(pid int) (map[string]float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		if kb, err := strconv.Atoi(f[1]); err == nil {
			out[f[0]] = round(float64(kb) / 1024)
		}
	}
	return out, nil
}
