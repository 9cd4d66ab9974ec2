package k8s

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// MountNS is a private mount namespace held by a sleeping process: a node's (or a bench
// containerd's) own view of /run, /var/lib and the like, while the host keeps its own.
// Processes join it with nsenter (Enter); it ends with its last process.
type MountNS struct {
	holder *exec.Cmd
}

// NewMountNS makes the namespace and runs setup (a sh script: the mounts) inside it.
func NewMountNS(setup string) (*MountNS, error) {
	m := &MountNS{holder: exec.Command("unshare", "-m", "--propagation", "private", "sleep", "infinity")}
	m.holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := startOnSpawner(m.holder); err != nil {
		return nil, fmt.Errorf("mount namespace holder: %w", err)
	}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	// unshare has made the namespace once its mount namespace differs from ours.
	if err := Poll(5*time.Second, func() bool { a, _ := os.Readlink(m.Path()); return a != "" && a != self }); err != nil {
		m.Close()
		return nil, fmt.Errorf("mount namespace holder: %w", err)
	}
	// unshare makes the namespace and only then makes its mounts private: a setup that ran in
	// between would propagate to the host. Making them private again first closes that window.
	if out, err := exec.Command("nsenter", "--mount="+m.Path(), "sh", "-c", "mount --make-rprivate / && "+setup).CombinedOutput(); err != nil {
		m.Close()
		return nil, fmt.Errorf("mounts: %w: %s", err, out)
	}
	return m, nil
}

// Path is the namespace's file.
func (m *MountNS) Path() string { return fmt.Sprintf("/proc/%d/ns/mnt", m.holder.Process.Pid) }

// Enter is the command prefix that runs a program in the namespace and network namespace
// netns (a path).
func (m *MountNS) Enter(netns string) []string {
	return []string{"nsenter", "--mount=" + m.Path(), "--net=" + netns}
}

// Close ends the holder; the namespace goes with the last process in it.
func (m *MountNS) Close() {
	if m == nil || m.holder == nil || m.holder.Process == nil {
		return
	}
	_ = m.holder.Process.Kill()
	_ = m.holder.Wait()
	m.holder = nil
}
