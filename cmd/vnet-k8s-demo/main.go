// Command vnet-k8s-demo runs vnet-cni on a real 2-node Kubernetes cluster in the emulated
// VNet (make demo-k8s) and prints how to use kubectl against it. It needs root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/vnet-cni/vnet-cni/test/k8s"
)

func main() {
	c := k8s.DemoConfig{Image: os.Getenv("VNET_IMAGE")}
	flag.StringVar(&c.WorkDir, "work", ".run/demo-k8s", "state and logs")
	flag.StringVar(&c.Image, "image", c.Image, "node image tarball (make image); empty builds one")
	flag.BoolVar(&c.Down, "down", false, "tear down a running or crashed demo")
	flag.BoolVar(&c.Wait, "wait", true, "stay up until Ctrl-C")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := k8s.RunDemo(ctx, os.Stdout, c); err != nil {
		fmt.Fprintln(os.Stderr, "vnet-k8s-demo:", err)
		os.Exit(1)
	}
}
