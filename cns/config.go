package cns

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/vnet-cni/vnet-cni/cns/cloud/azure"
	"github.com/vnet-cni/vnet-cni/cns/imds"
	"github.com/vnet-cni/vnet-cni/cns/k8s"
	"github.com/vnet-cni/vnet-cni/cns/masq"
	"github.com/vnet-cni/vnet-cni/ipampool"
)

// Config is everything cns needs to run. Defaults are production values; RegisterFlags
// exposes each as a flag.
type Config struct {
	Socket        string // unix socket of IPAMService + PoolService (root only)
	Listen        string // loopback TCP address of PoolService; empty disables
	MetricsListen string // loopback HTTP address of /metrics; empty disables
	StatePath     string // bbolt state file
	LogLevel      string
	LogFormat     string // text or json
	IPAMSource    string // IPAMSourceAzure, IPAMSourceCRD or IPAMSourceAuto
	Azure         azure.Config
	// IMDSEndpoint is the instance metadata service asked for what flags leave out.
	IMDSEndpoint string
	// BootstrapTimeout bounds finding the node's NIC at start (IMDS, token, ARM lookups).
	BootstrapTimeout time.Duration
	Kube             k8s.Config
	Pool             ManagerConfig
	// IPMasq masquerades pod traffic leaving NonMasqCIDRs to the node's address (the
	// node's network namespace: a DaemonSet with hostNetwork); NonMasqCIDRs empty means the
	// NIC's subnet.
	IPMasq       bool
	NonMasqCIDRs []netip.Prefix
}

// Where the pool's addresses come from.
const (
	IPAMSourceAzure = "azure" // direct mode: cns writes its NIC through ARM
	IPAMSourceCRD   = "crd"   // cluster mode: the NodeNetworkConfig, written by vnet-controller
	IPAMSourceAuto  = "auto"  // crd when the API server serves NodeNetworkConfig, else azure
)

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		Socket: "/run/cns/cns.sock", Listen: "127.0.0.1:10090", MetricsListen: "127.0.0.1:10092",
		StatePath: "/var/lib/cns/state.db", LogLevel: "info", LogFormat: "text", IMDSEndpoint: imds.Endpoint, BootstrapTimeout: 2 * time.Minute,
		IPAMSource: IPAMSourceAzure,
		Kube:       k8s.Config{Timeout: 30 * time.Second, GCGrace: 2 * time.Minute},
		Azure:      azure.Config{Auth: azure.AuthManagedIdentity},
		Pool: ManagerConfig{Limits: ipampool.DefaultLimits(), RequestWait: 20 * time.Second, CloudTimeout: 90 * time.Second,
			ReconcileInterval: 30 * time.Second, ReleaseSpool: "/var/lib/cns/release-spool", BackoffMin: 500 * time.Millisecond, BackoffMax: 30 * time.Second, MTU: 1500,
			DemandSettle: defaultDemandSettle, DemandHold: defaultDemandHold},
	}
}

// RegisterFlags binds every knob to fs, with c's values as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Socket, "socket", c.Socket, "unix socket for IPAMService and PoolService (mode 0600)")
	fs.StringVar(&c.Listen, "listen", c.Listen, "loopback address for the read-only PoolService, health and reflection; empty disables")
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, "loopback address for Prometheus /metrics; empty disables")
	fs.StringVar(&c.StatePath, "state", c.StatePath, "state file (bbolt)")
	fs.StringVar(&c.Pool.ReleaseSpool, "release-spool", c.Pool.ReleaseSpool, "directory of releases the plugin could not deliver; replayed at start and on every reconcile")
	fs.StringVar(&c.Pool.LegacyNetwork, "legacy-network", DefaultLegacyNetwork, "CNI network (conflist name) of allocations recorded before networks were: older state, legacy veth labels, older plugins")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json (one object per line, for log collectors)")
	fs.StringVar(&c.Kube.Kubeconfig, "kubeconfig", c.Kube.Kubeconfig, "kubeconfig of the API server; empty: in-cluster config inside a pod, no API server outside")
	fs.StringVar(&c.Kube.NodeName, "node-name", c.Kube.NodeName, "this node's name in the API server (default $NODE_NAME, then the host name)")
	fs.DurationVar(&c.Kube.Timeout, "api-timeout", c.Kube.Timeout, "deadline of one API server call")
	fs.DurationVar(&c.Kube.GCGrace, "pod-gc-grace", c.Kube.GCGrace, "how long an allocation's pod must be gone from the API server before its address is released")

	fs.StringVar(&c.IPAMSource, "ipam-source", c.IPAMSource, "azure (cns writes its NIC), crd (cluster mode: the node's NodeNetworkConfig) or auto (crd when the API server serves it)")
	c.Azure.RegisterAccessFlags(fs)
	fs.StringVar(&c.Azure.Subscription, "subscription", c.Azure.Subscription, "subscription ID of the node NIC; default from IMDS")
	fs.StringVar(&c.Azure.ResourceGroup, "resource-group", c.Azure.ResourceGroup, "resource group of the node NIC (or of its scale set); default from IMDS")
	fs.StringVar(&c.Azure.NIC, "nic", c.Azure.NIC, "name of the node NIC; default: found through ARM from the VM IMDS names, by MAC")
	fs.StringVar(&c.Azure.ScaleSet, "vmss", c.Azure.ScaleSet, "uniform scale set of the node VM (its NIC is written through the scale-set VM); default from IMDS")
	fs.StringVar(&c.Azure.Instance, "vmss-instance", c.Azure.Instance, "instance ID of the node VM in --vmss; default from IMDS")
	fs.StringVar(&c.IMDSEndpoint, "imds-endpoint", c.IMDSEndpoint, "instance metadata service asked for whatever the flags above leave out")
	fs.DurationVar(&c.BootstrapTimeout, "bootstrap-timeout", c.BootstrapTimeout, "longest time to find the node NIC at start (IMDS, token, ARM); then cns exits")
	fs.DurationVar(&c.Azure.PollInterval, "lro-poll-interval", azure.DefaultPollInterval, "wait between polls of a NIC write when ARM sends no Retry-After (ARM's Retry-After is always followed)")
	fs.BoolVar(&c.Azure.FastPoll, "lro-fast-poll", false, "poll NIC writes from 20 ms up to 1 s, for a local mockarm (implied by an http:// --arm-endpoint)")

	l := &c.Pool.Limits
	fs.IntVar(&l.BatchSize, "batch-size", l.BatchSize, "ip configurations added per growth unit")
	fs.IntVar(&l.MinFree, "min-free", l.MinFree, "low watermark of free addresses")
	fs.IntVar(&l.MaxFree, "max-free", l.MaxFree, "high watermark of free addresses")
	fs.IntVar(&l.MaxIPs, "max-ips", l.MaxIPs, "most secondary addresses on the NIC (Azure allows 256 ip configurations, the primary included)")
	fs.DurationVar(&l.Cooldown, "cooldown", l.Cooldown, "how long a released address rests before reuse")
	fs.DurationVar(&l.ReleaseDelay, "release-delay", l.ReleaseDelay, "how long an address must be idle before it is released from the NIC")
	p := &c.Pool
	fs.DurationVar(&p.RequestWait, "request-wait", p.RequestWait, "longest a RequestIPs waits for a scale-up")
	fs.DurationVar(&p.CloudTimeout, "cloud-timeout", p.CloudTimeout, "deadline of one cloud call, long-running operation included")
	fs.DurationVar(&p.ReconcileInterval, "reconcile-interval", p.ReconcileInterval, "how often the NIC is re-read")
	fs.DurationVar(&p.BackoffMin, "backoff-min", p.BackoffMin, "first retry delay after a cloud failure")
	fs.DurationVar(&p.BackoffMax, "backoff-max", p.BackoffMax, "cap of the retry delay (a longer Retry-After is honoured)")
	fs.DurationVar(&p.DemandSettle, "demand-settle", p.DemandSettle, "with the API server: how long the events of pods bound to this node must pause before cns writes for them")
	fs.DurationVar(&p.DemandHold, "demand-hold", p.DemandHold, "with the API server: longest cns holds a write for bound pods while their events keep coming")
	fs.BoolVar(&c.IPMasq, "ip-masq", c.IPMasq, "SNAT pod traffic to destinations outside --non-masquerade-cidrs to the node address (nftables table "+masq.Table+" in cns's network namespace)")
	fs.Func("non-masquerade-cidrs", "comma-separated CIDRs pods reach with their own address (default: the NIC's subnet)", func(s string) error {
		c.NonMasqCIDRs = nil
		for f := range strings.SplitSeq(s, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return err
			}
			c.NonMasqCIDRs = append(c.NonMasqCIDRs, p)
		}
		return masq.Validate(c.NonMasqCIDRs)
	})
	mtu := uint(p.MTU)
	fs.Func("mtu", fmt.Sprintf("VNet MTU reported to pods (default %d)", mtu), func(s string) error {
		_, err := fmt.Sscan(s, &p.MTU)
		return err
	})
}

// Validate reports every bad value.
func (c *Config) Validate() error {
	var errs []error
	if c.Socket == "" {
		errs = append(errs, errors.New("--socket is required"))
	}
	for name, addr := range map[string]string{"--listen": c.Listen, "--metrics-listen": c.MetricsListen} {
		if addr == "" {
			continue
		}
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want IP:port", name, addr))
		} else if !ap.Addr().IsLoopback() {
			errs = append(errs, fmt.Errorf("%s %q: must be a loopback address (the API has no authentication)", name, addr))
		}
	}
	if c.StatePath == "" {
		errs = append(errs, errors.New("--state is required"))
	}
	if err := c.Pool.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	p := c.Pool
	if p.DemandSettle <= 0 || p.DemandHold < p.DemandSettle {
		errs = append(errs, errors.New("--demand-settle must be positive and --demand-hold at least --demand-settle"))
	}
	if p.RequestWait <= 0 || p.CloudTimeout <= 0 || p.ReconcileInterval <= 0 || p.BackoffMin <= 0 || p.BackoffMax < p.BackoffMin {
		errs = append(errs, errors.New("--request-wait, --cloud-timeout, --reconcile-interval and --backoff-min must be positive, --backoff-max at least --backoff-min"))
	}
	if (c.Azure.ScaleSet == "") != (c.Azure.Instance == "") {
		errs = append(errs, errors.New("--vmss and --vmss-instance go together"))
	}
	if c.BootstrapTimeout <= 0 {
		errs = append(errs, errors.New("--bootstrap-timeout must be positive"))
	}
	if c.Azure.NeedsIMDS() && c.IMDSEndpoint == "" {
		errs = append(errs, errors.New("--imds-endpoint is empty and --subscription, --resource-group, --nic do not name the NIC"))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: want text or json", c.LogFormat))
	}
	if err := validateKube(c.Kube); err != nil {
		errs = append(errs, err)
	}
	if c.Azure.PollInterval < 0 {
		errs = append(errs, errors.New("--lro-poll-interval must not be negative"))
	}
	switch c.IPAMSource {
	case IPAMSourceAzure:
	case IPAMSourceCRD, IPAMSourceAuto:
	default:
		errs = append(errs, fmt.Errorf("--ipam-source %q: want azure, crd or auto", c.IPAMSource))
	}
	return errors.Join(errs...)
}

// NewLogger returns the logger --log-level and --log-format ask for, writing to w.
func (c *Config) NewLogger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	o := &slog.HandlerOptions{Level: level}
	switch c.LogFormat {
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, o)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", c.LogFormat)
}
