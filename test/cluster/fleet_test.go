package cluster

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// fleet is the bench's vnet-controller Deployment: count processes, each restarted when it
// exits on its own (a leader that lost its Lease exits, as controller-runtime intends, and its
// Deployment starts it again), except the one the bench kills.
type fleet struct {
	t     *testing.T
	start func(name string) *Proc

	mu       sync.Mutex
	procs    []*Proc
	killed   map[*Proc]bool
	restarts int
}

func newFleet(t *testing.T, e *env, count int, flags ...string) *fleet {
	t.Helper()
	bin := ControllerBin(t)
	kc := e.api.Kubeconfig(t)
	f := &fleet{t: t, killed: map[*Proc]bool{}, start: func(name string) *Proc {
		return StartControllerProc(t, bin, kc, e.mock, name, append([]string{"--workers", "64"}, flags...)...)
	}}
	for i := range count {
		f.procs = append(f.procs, f.start(fmt.Sprintf("controller-%d", i)))
		if i == 0 { // the first holds the Lease before the others start
			WaitLeader(t, time.Minute, func() string { return leaseHolder(e) }, f.procs[0])
		}
	}
	return f
}

// supervise restarts processes that exited on their own until ctx ends.
func (f *fleet) supervise(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		f.mu.Lock()
		for i, p := range f.procs {
			if !p.Alive() && !f.killed[p] {
				f.t.Logf("vnet-controller %d exited on its own (%v), restarting it; its log:\n%s", i, p.Cmd.ProcessState, p.Tail(8))
				f.procs[i] = f.start(fmt.Sprintf("controller-%d-restart-%d", i, f.restarts))
				f.restarts++
			}
		}
		f.mu.Unlock()
	}
}

// leader is the live process that last said it took the Lease (one that loses it exits).
func (f *fleet) leader() *Proc {
	f.mu.Lock()
	defer f.mu.Unlock()
	var best *Proc
	var at time.Time
	for _, p := range f.procs {
		if !p.Alive() {
			continue
		}
		b, _ := os.ReadFile(p.Log)
		i := strings.LastIndex(string(b), `"msg":"leading: this instance holds the lease"`)
		if i < 0 {
			continue
		}
		if st, err := os.Stat(p.Log); err == nil && (best == nil || st.ModTime().After(at)) {
			best, at = p, st.ModTime()
		}
	}
	return best
}

// killLeader SIGKILLs the process holding the Lease and returns how long until another holds it.
func (f *fleet) killLeader(e *env) time.Duration {
	t := f.t
	t.Helper()
	h := leaseHolder(e)
	p := f.leader()
	if h == "" || p == nil {
		t.Fatalf("no leader to kill (Lease holder %q)", h)
	}
	f.mu.Lock()
	f.killed[p] = true
	f.mu.Unlock()
	p.Kill()
	killed := time.Now()
	for leaseHolder(e) == h {
		if time.Since(killed) > 2*time.Minute {
			f.mu.Lock()
			var b strings.Builder
			for i, q := range f.procs {
				fmt.Fprintf(&b, "--- vnet-controller %d (alive %v):\n%s\n", i, q.Alive(), q.Tail(20))
			}
			f.mu.Unlock()
			t.Fatalf("no standby took the lease within 2 minutes; logs:\n%s", b.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(killed)
}

// maxRSS is the largest resident set of the live processes, in MiB.
func (f *fleet) maxRSS() float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := 0.0
	for _, p := range f.procs {
		if p.Alive() {
			m = max(m, rssMiB(p.Cmd.Process.Pid))
		}
	}
	return m
}
