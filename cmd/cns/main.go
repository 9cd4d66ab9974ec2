// Command cns is the node IP service: a warm pool of VNet addresses on the node NIC,
// served over gRPC to the vnet-cni plugin.
package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/signal"
	"syscall"

	"github.com/vnet-cni/vnet-cni/cns"
	"github.com/vnet-cni/vnet-cni/cns/gctune"
)

func main() {
	cfg := cns.DefaultConfig()
	cfg.RegisterFlags(flag.CommandLine)
	flag.Parse()
	err := cns.FlagsFromEnv(flag.CommandLine, os.LookupEnv)
	log, lerr := cfg.NewLogger(os.Stderr)
	if err = errors.Join(err, lerr); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(2)
	}
	log = log.With("component", "cns")
	if unknown := cns.UnknownFlagEnv(flag.CommandLine, os.Environ()); len(unknown) > 0 {
		log.Warn("environment variables with cns's prefix that set no flag (misspelled cns-config keys?)", "names", unknown)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	gctune.Start(ctx, os.LookupEnv, log)
	if err := cns.Run(ctx, cfg, log); err != nil {
		log.Error("cns failed", "err", err)
		os.Exit(1)
	}
}
