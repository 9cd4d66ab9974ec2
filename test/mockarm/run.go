package mockarm

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
)

// Options is mockarm's command line.
type Options struct {
	Config
	Listen string
	NICs   []NICSpec
}

// NICSpec asks for a NIC at start: name, optionally =primary address.
type NICSpec struct {
	Name    string
	Primary netip.Addr
}

// RegisterFlags binds the options to fs with Azure's defaults.
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	if o.Config.Subscription == "" {
		o.Config = DefaultConfig()
	}
	o.Listen = "127.0.0.1:10080"
	c := &o.Config
	fs.StringVar(&o.Listen, "listen", o.Listen, "address to serve ARM on")
	fs.Func("subnet", "VNet subnet (default 10.240.0.0/16)", func(s string) (err error) {
		c.Subnet, err = netip.ParsePrefix(s)
		return err
	})
	fs.StringVar(&c.Subscription, "subscription", c.Subscription, "subscription of the VNet")
	fs.StringVar(&c.ResourceGroup, "resource-group", c.ResourceGroup, "resource group of the VNet")
	fs.StringVar(&c.VNet, "vnet", c.VNet, "VNet name")
	fs.StringVar(&c.SubnetName, "subnet-name", c.SubnetName, "subnet name")
	fs.DurationVar(&c.Latency, "latency", c.Latency, "how long a NIC write stays InProgress")
	fs.IntVar(&c.WriteBurst, "write-burst", c.WriteBurst, "write token bucket size per subscription (0 disables throttling)")
	fs.Float64Var(&c.WriteRate, "write-rate", c.WriteRate, "write tokens per second per subscription")
	fs.IntVar(&c.MaxIPConfigs, "max-ipconfigs", c.MaxIPConfigs, "ip configurations per NIC")
	fs.StringVar(&c.StatePath, "state", c.StatePath, "state file; empty keeps state in memory")
	fs.BoolVar(&c.AutoCreateNICs, "auto-create-nics", true, "a GET of an unknown NIC creates it")
	fs.BoolVar(&c.Admin, "admin", false, "serve /admin/ (fault injection, NIC creation, state)")
	fs.Func("nic", "create NIC NAME[=PRIMARY] at start in the VNet's resource group (repeatable)", func(s string) error {
		name, addr, hasAddr := strings.Cut(s, "=")
		spec := NICSpec{Name: name}
		if hasAddr {
			a, err := netip.ParseAddr(addr)
			if err != nil {
				return err
			}
			spec.Primary = a
		}
		o.NICs = append(o.NICs, spec)
		return nil
	})
}

// Run serves mockarm until ctx ends.
func Run(ctx context.Context, o Options, log *slog.Logger) error {
	o.Log = log
	s, err := New(o.Config)
	if err != nil {
		return err
	}
	for _, n := range o.NICs {
		if _, err := s.CreateNIC(o.Subscription, o.ResourceGroup, n.Name, n.Primary); err != nil {
			return fmt.Errorf("create NIC %s: %w", n.Name, err)
		}
	}
	l, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return err
	}
	log.Info("mockarm serving", "addr", l.Addr().String(), "subnet", o.Subnet, "latency", o.Latency, "admin", o.Admin)
	return s.Serve(ctx, l)
}
