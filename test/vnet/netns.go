package vnet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netns"
)

const netnsDir = "/var/run/netns"

// newNamedNS creates a named network namespace (bind-mounted under /var/run/netns, so ip(8)
// sees it). The work happens on a throwaway locked thread that is never returned to the
// scheduler: whatever namespace it ends in, no other goroutine runs there.
func newNamedNS(name string) (ns.NetNS, error) {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		h, err := netns.NewNamed(name)
		if err == nil {
			h.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	n, err := ns.GetNS(filepath.Join(netnsDir, name))
	if err != nil {
		_ = netns.DeleteNamed(name)
		return nil, err
	}
	return n, nil
}

// deleteNamedNS unmounts and removes a named namespace; a missing one is fine.
func deleteNamedNS(name string) error {
	if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// SweepStale removes namespaces left by runs that died without cleaning up: names
// "vt<pid>-…" whose pid no longer runs.
func SweepStale() error {
	return sweep(func(name string) bool {
		rest, ok := strings.CutPrefix(name, "vt")
		pidStr, _, ok2 := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		return ok && ok2 && err == nil && !processAlive(pid)
	})
}

// SweepPrefix removes every namespace whose name starts with prefix (make demo-down).
func SweepPrefix(prefix string) error {
	return sweep(func(name string) bool { return strings.HasPrefix(name, prefix) })
}

// sweep deletes the named namespaces that doomed selects.
func sweep(doomed func(name string) bool) error {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if doomed(e.Name()) {
			errs = append(errs, deleteNamedNS(e.Name()))
		}
	}
	return errors.Join(errs...)
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// TestPrefix is a namespace prefix unique to this process, recognisable by SweepStale.
func TestPrefix(tag string) string { return fmt.Sprintf("vt%d-%s", os.Getpid(), tag) }
