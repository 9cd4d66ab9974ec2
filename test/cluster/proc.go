package cluster

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Proc is a real vnet-controller process (bin/vnet-controller, named by VNET_CONTROLLER_BIN).
type Proc struct {
	Cmd    *exec.Cmd
	Log    string        // its stderr and stdout
	Exited chan struct{} // closed when the process has ended
}

// ControllerBin is the vnet-controller binary the process tests run. Without
// VNET_CONTROLLER_BIN the test is skipped on a developer machine and fails under CI=true.
func ControllerBin(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("VNET_CONTROLLER_BIN"); b != "" {
		return b
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("VNET_CONTROLLER_BIN is not set (make test and make bench-cluster build bin/vnet-controller)")
	}
	t.Skip("VNET_CONTROLLER_BIN is not set (make test and make bench-cluster build bin/vnet-controller)")
	return ""
}

// Kubeconfig writes a kubeconfig of a cluster-admin user of api for a controller process.
func (api *APIServer) Kubeconfig(t testing.TB) string {
	t.Helper()
	u, err := api.env.AddUser(envtest.User{Name: "vnet-controller", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := u.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// StartControllerProc starts a vnet-controller process against api and m, leader election in
// namespace default with the short lease of ControllerConfig; extra flags are appended.
func StartControllerProc(t testing.TB, bin, kubeconfig string, m *Mock, name string, extra ...string) *Proc {
	t.Helper()
	cc := m.ControllerConfig()
	args := []string{"--kubeconfig", kubeconfig, "--arm-endpoint", m.URL, "--auth", "static",
		"--lease-namespace", cc.LeaseNamespace, "--lease-duration", cc.LeaseDuration.String(),
		"--renew-deadline", cc.RenewDeadline.String(), "--retry-period", cc.RetryPeriod.String(),
		"--metrics-listen", "0", "--health-listen", "0", "--log-level", "info"}
	cmd := exec.Command(bin, append(args, extra...)...)
	p := &Proc{Cmd: cmd, Log: filepath.Join(t.TempDir(), name+".log"), Exited: make(chan struct{})}
	lf, err := os.Create(p.Log)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	starting.RLock()
	if err := cmd.Start(); err != nil {
		starting.RUnlock()
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); lf.Close(); close(p.Exited) }()
	running.Store(p, p.Kill) // Kill is safe to call twice and from two goroutines
	starting.RUnlock()
	t.Cleanup(func() {
		p.Kill()
		running.Delete(p)
	})
	return p
}

// Kill SIGKILLs the process (its lease is not released) and waits for it.
func (p *Proc) Kill() {
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.Exited
}

// Alive reports whether the process still runs.
func (p *Proc) Alive() bool {
	select {
	case <-p.Exited:
		return false
	default:
		return true
	}
}

// Tail is the last n lines of the process's log.
func (p *Proc) Tail(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	lines = lines[max(0, len(lines)-n):]
	return string(bytes.Join(lines, []byte("\n")))
}

// WaitLeader waits until holder() names a leader, failing at once with the log tail of every
// process when one of them exits, and after within with their log tails too.
func WaitLeader(t testing.TB, within time.Duration, holder func() string, procs ...*Proc) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if h := holder(); h != "" {
			return h
		}
		for i, p := range procs {
			if !p.Alive() {
				t.Fatalf("vnet-controller %d exited (%v) before any instance took the Lease; its log:\n%s", i, p.Cmd.ProcessState, p.Tail(40))
			}
		}
		if time.Now().After(deadline) {
			var b bytes.Buffer
			for i, p := range procs {
				fmt.Fprintf(&b, "--- vnet-controller %d:\n%s\n", i, p.Tail(40))
			}
			t.Fatalf("no vnet-controller took the Lease within %s; their logs:\n%s", within, b.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
