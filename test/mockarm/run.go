package mockarm

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Options is mockarm's command line.
type Options struct {
	Config
	Listen      string
	NICs        []NICSpec
	FabricNetns string // named network namespace of the emulated VNet
	IMDS        bool   // serve IMDS on 169.254.169.254:80 inside FabricNetns
	VMs         []NICSpec
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
	fs.BoolVar(&c.RequireToken, "require-token", true, "answer 401 to ARM calls without a bearer token mockarm's IMDS issued (or a --static-token)")
	fs.Func("static-token", "also accept this bearer token (cns --auth static, as make run does); repeatable", func(s string) error {
		c.StaticTokens = append(c.StaticTokens, s)
		return nil
	})
	fs.BoolVar(&o.IMDS, "imds", false, "with --fabric-netns: serve IMDS (instance metadata, managed identity tokens) on 169.254.169.254:80 "+
		"inside that namespace, which must hold the address (e.g. on lo)")
	fs.Func("vm", "create standalone VM NAME[=PRIMARY] with NIC NAME-nic at start (repeatable)", func(s string) error {
		spec, err := parseSpec(s)
		o.VMs = append(o.VMs, spec)
		return err
	})
	fs.StringVar(&o.FabricNetns, "fabric-netns", "", "program the emulated VNet in this named network namespace (/32 route per ip configuration "+
		"via its node), and also serve ARM on the subnet's gateway address inside it, at the --listen port")
	fs.Func("nic", "create NIC NAME[=PRIMARY] at start in the VNet's resource group (repeatable)", func(s string) error {
		spec, err := parseSpec(s)
		o.NICs = append(o.NICs, spec)
		return err
	})
}

func parseSpec(s string) (NICSpec, error) {
	name, addr, hasAddr := strings.Cut(s, "=")
	spec := NICSpec{Name: name}
	if hasAddr {
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return spec, err
		}
		spec.Primary = a
	}
	return spec, nil
}

// Run serves mockarm until ctx ends.
func Run(ctx context.Context, o Options, log *slog.Logger) error {
	o.Log = log
	var fabricNS ns.NetNS
	if o.FabricNetns != "" {
		var err error
		if fabricNS, err = ns.GetNS(filepath.Join("/var/run/netns", o.FabricNetns)); err != nil {
			return fmt.Errorf("fabric namespace: %w", err)
		}
		defer fabricNS.Close()
		o.Fabric = &NetnsFabric{NS: fabricNS}
	}
	s, err := New(o.Config)
	if err != nil {
		return err
	}
	for _, n := range o.NICs {
		if _, err := s.CreateNIC(o.Subscription, o.ResourceGroup, n.Name, n.Primary); err != nil {
			return fmt.Errorf("create NIC %s: %w", n.Name, err)
		}
	}
	for _, n := range o.VMs {
		if _, err := s.CreateVM(o.Subscription, o.ResourceGroup, n.Name, n.Primary); err != nil {
			return fmt.Errorf("create VM %s: %w", n.Name, err)
		}
	}
	l, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return err
	}
	log.Info("mockarm serving", "addr", l.Addr().String(), "subnet", o.Subnet, "latency", o.Latency, "admin", o.Admin)
	if fabricNS != nil {
		_, port, _ := net.SplitHostPort(l.Addr().String())
		gw := net.JoinHostPort(Gateway(o.Subnet).String(), port)
		gl, err := ListenInNS(fabricNS, gw)
		if err != nil {
			l.Close()
			return fmt.Errorf("listen on the VNet gateway %s in %s: %w", gw, o.FabricNetns, err)
		}
		log.Info("mockarm serving inside the VNet", "netns", o.FabricNetns, "addr", gw)
		go func() { _ = s.Serve(ctx, gl) }()
		if o.IMDS {
			il, err := ListenInNS(fabricNS, net.JoinHostPort(IMDSAddr.String(), "80"))
			if err != nil {
				l.Close()
				return fmt.Errorf("listen for IMDS in %s: %w", o.FabricNetns, err)
			}
			log.Info("IMDS serving inside the VNet", "netns", o.FabricNetns, "addr", il.Addr().String())
			go func() { _ = s.ServeIMDS(ctx, il) }()
		}
	}
	return s.Serve(ctx, l)
}
