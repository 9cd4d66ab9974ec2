// Command cns is the node IP service: a warm pool of VNet addresses on the node NIC,
// served over gRPC to the vnet-cni plugin.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/vnet-cni/vnet-cni/cns"
)

func main() {
	cfg := cns.DefaultConfig()
	cfg.RegisterFlags(flag.CommandLine)
	flag.Parse()
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		slog.Error("bad --log-level", "err", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("component", "cns")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cns.Run(ctx, cfg, log); err != nil {
		log.Error("cns failed", "err", err)
		os.Exit(1)
	}
}
