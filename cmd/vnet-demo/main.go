// Command vnet-demo builds a 2-node emulated VNet with 2 pods per node and shows a
// cross-node request keeping its source address. It needs root (network namespaces).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/vnet-cni/vnet-cni/test/vnet"
)

func main() {
	var c vnet.DemoConfig
	flag.StringVar(&c.BinDir, "bin", "bin", "directory holding cns and vnet-cni")
	flag.StringVar(&c.WorkDir, "work", ".run/demo", "state, sockets and logs")
	flag.BoolVar(&c.Down, "down", false, "tear down a running or crashed demo")
	flag.BoolVar(&c.Wait, "wait", true, "stay up until Ctrl-C")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := vnet.RunDemo(ctx, os.Stdout, c); err != nil {
		fmt.Fprintln(os.Stderr, "vnet-demo:", err)
		os.Exit(1)
	}
}
