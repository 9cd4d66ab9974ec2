package controller

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1 "github.com/vnet-cni/vnet-cni/cns/api/v1alpha1"
	"github.com/vnet-cni/vnet-cni/cns/cloud/azure"
	"github.com/vnet-cni/vnet-cni/cns/cloud/crd"
	"github.com/vnet-cni/vnet-cni/ipampool"
)

// Config is everything the controller needs. Defaults are production values.
type Config struct {
	Kubeconfig    string // empty: in-cluster, or $KUBECONFIG
	APIQPS        float32
	APIBurst      int
	Azure         azure.Config  // endpoint and credential; each node's VM comes from its Node's spec.providerID
	NICNameFormat string        // set: no discovery, the NIC is Sprintf(format, node) in Azure's subscription and group
	AllowedGroups string        // comma-separated subscription/resourceGroup pairs a provider ID may name; empty allows any
	WriteBurst    int           // ARM write budget: bucket size (Azure: 200)
	WriteRate     float64       // ARM write budget: refill per second (Azure: 10)
	Workers       int           // nodes written concurrently
	ResyncPeriod  time.Duration // about how often each NIC is re-read for out-of-band changes
	ResyncReads   float64       // drift reads per second, cluster-wide
	MaxIPs        int
	CloudTimeout  time.Duration

	LeaderElect    bool
	LeaseNamespace string
	LeaseName      string
	LeaseDuration  time.Duration
	RenewDeadline  time.Duration
	RetryPeriod    time.Duration

	MetricsListen string
	HealthListen  string
	LogLevel      string
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{APIQPS: 50, APIBurst: 100, Azure: azure.Config{Auth: azure.AuthManagedIdentity},
		WriteBurst: 200, WriteRate: 10, Workers: 32, ResyncPeriod: 5 * time.Minute, ResyncReads: 5, MaxIPs: 250, CloudTimeout: 90 * time.Second,
		LeaderElect: true, LeaseNamespace: "kube-system", LeaseName: "vnet-controller",
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
		MetricsListen: ":10093", HealthListen: ":10094", LogLevel: "info"}
}

// RegisterFlags binds every knob to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "kubeconfig; empty is in-cluster or $KUBECONFIG")
	c.Azure.RegisterAccessFlags(fs)
	fs.StringVar(&c.Azure.Subscription, "subscription", c.Azure.Subscription, "with --nic-name-format: subscription of the node NICs")
	fs.StringVar(&c.Azure.ResourceGroup, "resource-group", c.Azure.ResourceGroup, "with --nic-name-format: resource group of the node NICs")
	fs.StringVar(&c.NICNameFormat, "nic-name-format", c.NICNameFormat, "NIC name of a node (%s is the node name) instead of discovery from the Node's spec.providerID")
	fs.StringVar(&c.AllowedGroups, "allowed-resource-groups", c.AllowedGroups, "comma-separated subscription/resourceGroup pairs a Node's spec.providerID may name; empty allows any")
	fs.IntVar(&c.WriteBurst, "write-burst", c.WriteBurst, "ARM write budget: bucket size (Azure: 200 per subscription and region)")
	fs.Float64Var(&c.WriteRate, "write-rate", c.WriteRate, "ARM write budget: writes per second refilled (Azure: 10)")
	fs.IntVar(&c.Workers, "workers", c.Workers, "nodes whose NIC is written concurrently (one write per node at a time)")
	fs.DurationVar(&c.ResyncPeriod, "resync-period", c.ResyncPeriod, "about how often (jittered ±20%) each NIC is re-read so out-of-band changes reach the status; 0 disables")
	fs.Float64Var(&c.ResyncReads, "resync-reads", c.ResyncReads, "budget of those re-reads, NIC reads per second cluster-wide (spec changes are not limited by it)")
	fs.IntVar(&c.MaxIPs, "max-ips", c.MaxIPs, "most secondary addresses per node")
	fs.DurationVar(&c.CloudTimeout, "cloud-timeout", c.CloudTimeout, "deadline of one NIC read or write, long-running operation included")
	fs.BoolVar(&c.LeaderElect, "leader-elect", c.LeaderElect, "elect a leader on a Lease; only the leader writes")
	fs.StringVar(&c.LeaseNamespace, "lease-namespace", c.LeaseNamespace, "namespace of the leader Lease")
	fs.StringVar(&c.LeaseName, "lease-name", c.LeaseName, "name of the leader Lease")
	fs.DurationVar(&c.LeaseDuration, "lease-duration", c.LeaseDuration, "how long a standby waits before taking over a silent leader's lease")
	fs.DurationVar(&c.RenewDeadline, "renew-deadline", c.RenewDeadline, "how long the leader tries to renew before it stops leading")
	fs.DurationVar(&c.RetryPeriod, "retry-period", c.RetryPeriod, "how often candidates try the lease")
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, "address of Prometheus /metrics; 0 disables")
	fs.StringVar(&c.HealthListen, "health-listen", c.HealthListen, "address of /healthz and /readyz; 0 disables")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
}

// Validate reports every bad value.
func (c *Config) Validate() error {
	var errs []error
	if c.NICNameFormat != "" && (c.Azure.Subscription == "" || c.Azure.ResourceGroup == "") {
		errs = append(errs, errors.New("--nic-name-format needs --subscription and --resource-group"))
	}
	if c.WriteBurst < 1 || c.WriteRate <= 0 || c.Workers < 1 || c.MaxIPs < 1 || c.CloudTimeout <= 0 || c.ResyncPeriod < 0 || c.ResyncReads <= 0 {
		errs = append(errs, errors.New("--write-burst, --write-rate, --workers, --max-ips, --cloud-timeout and --resync-reads must be positive, --resync-period not negative"))
	}
	if c.MaxIPs > ipampool.NICHardLimit-1 {
		errs = append(errs, fmt.Errorf("--max-ips %d: Azure allows %d ip configurations on a NIC, the primary included", c.MaxIPs, ipampool.NICHardLimit))
	}
	if c.LeaderElect && !(c.LeaseDuration > c.RenewDeadline && c.RenewDeadline > c.RetryPeriod && c.RetryPeriod > 0) {
		errs = append(errs, errors.New("want --lease-duration > --renew-deadline > --retry-period > 0"))
	}
	return errors.Join(errs...)
}

// Run serves the controller until ctx ends. A standby waits for the lease; leadership lost
// ends Run with an error (the process restarts as a standby, as controller-runtime intends).
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	rc, err := crd.RestConfig(cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = cfg.APIQPS, cfg.APIBurst
	lr := logr.FromSlogHandler(log.Handler())
	ctrl.SetLogger(lr)
	klog.SetLogger(lr) // client-go's leader election reports its failures through klog
	mgr, err := ctrl.NewManager(rc, manager.Options{
		Scheme: crd.Scheme(), Logger: lr,
		Metrics:                       metricsserver.Options{BindAddress: cfg.MetricsListen},
		HealthProbeBindAddress:        cfg.HealthListen,
		LeaderElection:                cfg.LeaderElect,
		LeaderElectionID:              cfg.LeaseName,
		LeaderElectionNamespace:       cfg.LeaseNamespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &cfg.LeaseDuration,
		RenewDeadline:                 &cfg.RenewDeadline,
		RetryPeriod:                   &cfg.RetryPeriod,
	})
	if err != nil {
		return fmt.Errorf("controller manager: %w", err)
	}
	if err := Setup(mgr, cfg, crmetrics.Registry, log); err != nil {
		return err
	}
	if cfg.HealthListen != "0" && cfg.HealthListen != "" {
		_ = mgr.AddHealthzCheck("ping", healthz.Ping)
		_ = mgr.AddReadyzCheck("ping", healthz.Ping)
	}
	log.Info("vnet-controller starting", "leaderElect", cfg.LeaderElect, "lease", cfg.LeaseNamespace+"/"+cfg.LeaseName,
		"writeBurst", cfg.WriteBurst, "writeRate", cfg.WriteRate, "workers", cfg.Workers)
	if cfg.LeaderElect {
		go watchStandby(ctx, mgr.GetAPIReader(), cfg.LeaseNamespace, cfg.LeaseName, cfg.LeaseDuration, mgr.Elected(), log)
	}
	return mgr.Start(ctx)
}

// Setup adds the NodeNetworkConfig controller, its ARM write budget and its metrics to mgr.
func Setup(mgr manager.Manager, cfg Config, reg prometheus.Registerer, log *slog.Logger) error {
	budget := NewBudget(cfg.WriteBurst, cfg.WriteRate)
	metrics := NewMetrics(reg, budget)
	tr := &Transport{Budget: budget, Next: http.DefaultTransport,
		Waited:    func(d time.Duration) { metrics.budgetWait.Observe(d.Seconds()) },
		Throttled: func(time.Duration) { metrics.throttled.Inc() }}
	ac := cfg.Azure
	ac.Transport = tr
	cred, err := azure.Credential(ac) // one identity, one token cache for every node
	if err != nil {
		return fmt.Errorf("ARM credential: %w", err)
	}
	d := &Discoverer{Nodes: mgr.GetAPIReader(), Base: ac, Cred: cred, NICNameFormat: cfg.NICNameFormat,
		AllowedGroups: splitList(cfg.AllowedGroups)}
	r := &Reconciler{Client: mgr.GetClient(), MaxIPs: cfg.MaxIPs, CloudTimeout: cfg.CloudTimeout, Log: log, Metrics: metrics,
		NICs: d.NIC, Budget: budget, Resync: Resync{Period: cfg.ResyncPeriod, Reads: rate.NewLimiter(rate.Limit(cfg.ResyncReads), max(1, int(cfg.ResyncReads)))}}
	seen := predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool {
			metrics.specSeen(e.Object.GetName(), e.Object.GetGeneration())
			return true
		},
		UpdateFunc: func(e event.UpdateEvent) bool {
			metrics.specSeen(e.ObjectNew.GetName(), e.ObjectNew.GetGeneration())
			return e.ObjectNew.GetGeneration() != e.ObjectOld.GetGeneration() // status writes are our own
		},
	}
	return ctrl.NewControllerManagedBy(mgr).Named("nodenetworkconfig").
		For(&v1.NodeNetworkConfig{}, builder.WithPredicates(seen)).
		// One controller per manager; tests run a leader and a standby in one process.
		WithOptions(controller.Options{MaxConcurrentReconciles: cfg.Workers, SkipNameValidation: ptr.To(true)}).
		Complete(r)
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
