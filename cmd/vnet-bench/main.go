// Command vnet-bench is `make bench`: it measures vnet-cni and cns against the reference
// plugins on this machine, prints a table and writes results.json. It needs root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/vnet-cni/vnet-cni/test/bench"
)

func main() {
	var c bench.Config
	flag.StringVar(&c.BinDir, "bin", "bin", "directory holding cns and vnet-cni")
	flag.StringVar(&c.RefDir, "ref", ".tools/cni", "directory holding the reference ptp and host-local plugins")
	flag.StringVar(&c.CNITool, "cnitool", ".tools/bin/cnitool", "cnitool binary")
	flag.StringVar(&c.CRICtl, "crictl", ".tools/bin/crictl", "crictl binary (containerd step)")
	flag.StringVar(&c.Pause, "pause", ".run/bench-pause", "static pause binary for the sandbox image (containerd step)")
	flag.StringVar(&c.Null, "null", "", "a CNI plugin that does nothing (test/bench/nullcni): the floor of any Go plugin, measured beside ours")
	flag.StringVar(&c.NullCNS, "null-cns", "", "a server of cns's IPAM calls with no pool and no store (test/bench/nullcns): the floors of the gRPC pairs, answering at once and making each call durable first, measured beside cns")
	flag.StringVar(&c.WorkDir, "work", ".run/bench", "scratch directory")
	flag.StringVar(&c.Out, "out", "bench/results.json", "results file")
	flag.IntVar(&c.Iterations, "iterations", 100, "ADD/DEL iterations per plugin")
	flag.StringVar(&c.Only, "only", "", "run only the steps whose name contains this")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := bench.Run(ctx, os.Stdout, c); err != nil {
		fmt.Fprintln(os.Stderr, "vnet-bench:", err)
		os.Exit(1)
	}
}
