package cluster

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vnet-cni/vnet-cni/test/k8s"
)

// A test binary asked to end (SIGTERM: a CI job cancelled, an engineer's kill) stops the
// kube-apiserver and etcd it started; its cleanups never run then, and those processes would
// run on, holding ports and temp directories.
func TestASignalStopsTheControlPlanesItStarted(t *testing.T) {
	if os.Getenv("VNET_SIGNAL_CHILD") == "1" {
		StartAPIServer(t)
		os.Stdout.WriteString("ready\n")
		select {} // until the signal (or the -test.timeout the parent gave)
	}
	k8s.RequireBins(t) // skips on a developer machine without them, fails under CI=true
	cmd := exec.Command(os.Args[0], "-test.run", "^TestASignalStopsTheControlPlanesItStarted$", "-test.timeout", "5m")
	cmd.Env = append(os.Environ(), "VNET_SIGNAL_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready, exited := make(chan struct{}), make(chan struct{})
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			if s.Text() == "ready" {
				close(ready)
			} else {
				t.Log("child: " + s.Text())
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	// On a failure below the child still gets SIGTERM, the way that stops what it started.
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	select {
	case <-ready:
	case <-exited:
		t.Fatal("the child test ended before its control plane was up")
	case <-time.After(2 * time.Minute):
		t.Fatal("the child test's control plane did not come up in 2 minutes")
	}
	kids := children(t, cmd.Process.Pid)
	if len(kids) < 2 {
		t.Fatalf("the child test runs %d processes, want etcd and kube-apiserver", len(kids))
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(time.Minute):
		t.Fatal("the child test did not end within a minute of SIGTERM")
	}
	if code := cmd.ProcessState.ExitCode(); code != 128+int(syscall.SIGTERM) {
		t.Errorf("the child test exited %d, want %d", code, 128+int(syscall.SIGTERM))
	}
	for _, k := range kids {
		if k.running() {
			t.Errorf("%s (pid %d) still runs after its test binary ended", k.name, k.pid)
			_ = syscall.Kill(k.pid, syscall.SIGKILL)
		}
	}
}

// proc is a process identified beyond its pid, which the kernel may give to another later.
type proc struct {
	pid   int
	name  string
	start string // field 22 of /proc/<pid>/stat: start time since boot
}

// stat returns a process's state and start time; ok is false when it is gone.
func stat(pid int) (state, start string, ok bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return "", "", false
	}
	// The name (field 2) is in parentheses and may hold spaces: count from its end.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 20 {
		return "", "", false
	}
	return f[0], f[19], true // fields 3 and 22
}

// running reports whether the process still runs: the same start time, and not a zombie.
func (p proc) running() bool {
	state, start, ok := stat(p.pid)
	return ok && start == p.start && state != "Z"
}

// children returns the child processes of pid.
func children(t *testing.T, pid int) []proc {
	t.Helper()
	tasks, err := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "children"))
	if err != nil {
		t.Fatal(err)
	}
	var kids []proc
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, k := range strings.Fields(string(b)) {
			n, err := strconv.Atoi(k)
			if err != nil {
				t.Fatalf("%s: %q", f, b)
			}
			comm, _ := os.ReadFile(filepath.Join("/proc", k, "comm"))
			if _, start, ok := stat(n); ok {
				kids = append(kids, proc{pid: n, name: strings.TrimSpace(string(comm)), start: start})
			}
		}
	}
	return kids
}
