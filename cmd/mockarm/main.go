// Command mockarm serves a local Azure Resource Manager for cns: NIC and subnet routes,
// long-running operations, throttling and fault injection.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/vnet-cni/vnet-cni/test/mockarm"
)

func main() {
	var o mockarm.Options
	o.RegisterFlags(flag.CommandLine)
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "mockarm")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := mockarm.Run(ctx, o, log); err != nil {
		log.Error("mockarm failed", "err", err)
		os.Exit(1)
	}
}
