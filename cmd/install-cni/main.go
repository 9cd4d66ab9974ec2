// Command install-cni is the cns DaemonSet's companion: it installs vnet-cni and its conflist
// once cns is serving, and is the DaemonSet's health probe (--probe).
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/vnet-cni/vnet-cni/cns/installcni"
)

func main() {
	var cfg installcni.Config
	cfg.RegisterFlags(flag.CommandLine)
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "install-cni")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := installcni.Run(ctx, cfg, log); err != nil {
		log.Error("install-cni failed", "err", err)
		os.Exit(1)
	}
}
