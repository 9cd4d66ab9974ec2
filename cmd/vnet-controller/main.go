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
	cfg.RegisterFlags(flag.CommandLine)
	flag.Parse()
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
