package k8s

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// A run whose owner died is swept, with a process its directory marks; a live run is not.
func TestSweepStaleRunsRemovesOnlyDeadOwnersRuns(t *testing.T) {
	base := t.TempDir()
	dead, live := filepath.Join(base, "run-dead"), filepath.Join(base, "run-live")
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	for dir, pid := range map[string]int{dead: gone.Process.Pid, live: os.Getpid()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, OwnerFile), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A leftover "shim": its command line names the dead run's directory.
	shimLog := filepath.Join(dead, "shim.log")
	if err := os.WriteFile(shimLog, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	shim := exec.Command("tail", "-f", shimLog)
	if err := shim.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = shim.Wait(); close(exited) }()
	t.Cleanup(func() { _ = shim.Process.Kill() })
	if err := SweepStaleRuns(filepath.Join(base, "run-*")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("the dead owner's run is still there (%v)", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the live run was removed: %v", err)
	}
	select { // killed by the sweep: it exits at once (sleep 60 otherwise)
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Error("the dead run's leftover process is still running")
	}
}
