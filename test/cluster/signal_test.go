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
		select {} // until the signal
	}
	k8s.RequireBins(t) // skips on a developer machine without them, fails under CI=true
	cmd := exec.Command(os.Args[0], "-test.run", "^TestASignalStopsTheControlPlanesItStarted$")
	cmd.Env = append(os.Environ(), "VNET_SIGNAL_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan bool, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			if s.Text() == "ready" {
				ready <- true
			}
		}
		close(ready)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("the child test ended before its control plane was up")
		}
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
	_ = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 128+int(syscall.SIGTERM) {
		t.Errorf("the child test exited %d, want %d", code, 128+int(syscall.SIGTERM))
	}
	for pid, name := range kids {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("%s (pid %d) still runs after its test binary ended", name, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// children returns the child processes of pid, by name.
func children(t *testing.T, pid int) map[int]string {
	t.Helper()
	tasks, err := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "children"))
	if err != nil {
		t.Fatal(err)
	}
	kids := map[int]string{}
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, k := range strings.Fields(string(b)) {
			n, err := strconv.Atoi(k)
			if err != nil {
				t.Fatalf("%s: %q", f, b)
			}
			comm, _ := os.ReadFile(filepath.Join("/proc", k, "comm"))
			kids[n] = strings.TrimSpace(string(comm))
		}
	}
	return kids
}
