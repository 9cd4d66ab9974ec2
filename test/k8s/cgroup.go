package k8s

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupDirs lists root (a cgroup path such as /vnetk8s-x) and every cgroup below it, in
// every mounted hierarchy (cgroup v1 has one per controller, v2 one), deepest first.
func cgroupDirs(root string) []string {
	var tops []string
	if d := filepath.Join("/sys/fs/cgroup", root); isDir(d) {
		tops = append(tops, d)
	}
	hier, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hier {
		if d := filepath.Join(h, root); isDir(d) && !slices.Contains(tops, d) {
			tops = append(tops, d)
		}
	}
	var out []string
	for _, t := range tops {
		_ = filepath.WalkDir(t, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				out = append(out, p)
			}
			return nil
		})
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return out
}

func isDir(p string) bool { st, err := os.Stat(p); return err == nil && st.IsDir() }

// killCgroup kills every process in root's cgroups and removes them.
func killCgroup(root string) error {
	if root == "" || root == "/" {
		return fmt.Errorf("refusing to kill cgroup %q", root)
	}
	var left []string
	err := Poll(15*time.Second, func() bool {
		left = left[:0]
		for _, d := range cgroupDirs(root) {
			b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				left = append(left, d)
			}
		}
		return len(left) == 0
	})
	if err != nil {
		return fmt.Errorf("cgroups left: %v: %w", left, err)
	}
	return nil
}
