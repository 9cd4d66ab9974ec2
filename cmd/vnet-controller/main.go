// Command vnet-controller is the cluster-mode controller: it applies every node's
// NodeNetworkConfig to the node's NIC through ARM under one cluster-wide write budget.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/vnet-cni/vnet-cni/cns/controller"
)

func main() {
	cfg := controller.DefaultConfig()
	// Not flag.CommandLine: controller-runtime's client/config package registers its own
	// --kubeconfig there at init, and a second registration panics before main logs anything.
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	cfg.RegisterFlags(fs)
	_ = fs.Parse(os.Args[1:])
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		slog.Error("bad --log-level", "err", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("component", "vnet-controller")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := controller.Run(ctx, cfg, log); err != nil {
		log.Error("vnet-controller failed", "err", err)
		os.Exit(1)
	}
}
