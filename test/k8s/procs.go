package k8s

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// copyDir copies the regular files of src (none when src is empty) into dst.
func copyDir(src, dst string) error {
	if src == "" {
		return nil
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// shimsOf returns the containerd shims serving the containerd at sock.
func shimsOf(sock string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == sock {
				if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil {
					pids = append(pids, pid)
				}
			}
		}
	}
	return pids
}

// processesMarked returns the processes, pid → command, whose mounts (and, with
// cmdline, whose command line) mention mark; never this process or its ancestors (the
// shell that started it names the same directory).
func processesMarked(mark string, cmdline bool) map[int]string {
	out := map[int]string{}
	skip := ancestors()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || skip[pid] {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join(d, "cmdline"))
		mi, _ := os.ReadFile(filepath.Join(d, "mountinfo"))
		if strings.Contains(string(mi), mark) || cmdline && strings.Contains(string(cmd), mark) {
			argv0, _, _ := strings.Cut(string(cmd), "\x00")
			out[pid] = argv0
		}
	}
	return out
}

// killMarked kills the processes list returns until none is left, and removes the
// container cgroups they were in.
func killMarked(list func() map[int]string) error {
	cgroups := map[string]bool{}
	var left map[int]string
	err := Poll(15*time.Second, func() bool {
		left = list()
		for pid := range left {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
			for _, line := range strings.Split(string(b), "\n") {
				// containerd's default parent for containers (kubelet gives none without QoS cgroups)
				if f := strings.SplitN(line, ":", 3); len(f) == 3 && strings.HasPrefix(f[2], "/k8s.io/") {
					cgroups[f[2]] = true
				}
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		return len(left) == 0
	})
	for cg := range cgroups {
		for _, d := range cgroupDirs(cg) {
			_ = os.Remove(d)
		}
	}
	if err != nil {
		return fmt.Errorf("processes left: %v: %w", left, err)
	}
	return nil
}

// ancestors returns this process and its ancestors.
func ancestors() map[int]bool {
	out := map[int]bool{}
	for pid := os.Getpid(); pid > 1 && !out[pid]; {
		out[pid] = true
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			break
		}
		// pid (comm) state ppid ...: comm may hold spaces, so parse after the last ')'.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 2 {
			break
		}
		pid, _ = strconv.Atoi(f[1])
	}
	return out
}

// OwnerFile, in a run's directory, holds the pid of the test process that made it.
const OwnerFile = "owner.pid"

// SweepStaleRuns removes what earlier runs left when their test process died without
// closing (go test's timeout, a kill): for every directory matching pattern whose
// OwnerFile names a dead process, the processes marked by it (containerd shims and their
// containers survive their parent), then the directory. A run that is still alive, or a
// directory without an owner, is left alone. Namespaces go with vnet.SweepStale.
func SweepStaleRuns(pattern string) error {
	dirs, err := filepath.Glob(pattern)
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, OwnerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 || syscall.Kill(pid, 0) == nil {
			continue
		}
		mark := d + "/"
		errs = append(errs, killMarked(func() map[int]string { return processesMarked(mark, true) }), os.RemoveAll(d))
	}
	return errors.Join(errs...)
}
