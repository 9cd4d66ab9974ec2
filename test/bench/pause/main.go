// Command pause is the pod sandbox's PID 1 in make bench's containerd runs: it reaps
// zombies and exits on SIGINT/SIGTERM. make bench builds it static and packs it into an OCI
// image tarball (no Docker, no registry).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 8)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range c {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for pid, _ := syscall.Wait4(-1, nil, syscall.WNOHANG, nil); pid > 0; pid, _ = syscall.Wait4(-1, nil, syscall.WNOHANG, nil) {
		}
	}
}
