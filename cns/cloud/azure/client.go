package azure

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"

	"github.com/vnet-cni/vnet-cni/cns/cloud"
)

// Auth modes.
const (
	AuthManagedIdentity = "managed-identity"
	AuthDefault         = "default"
	AuthStatic          = "static" // a fixed bearer token; for mockarm only
)

// Config selects the NIC and how to reach ARM.
type Config struct {
	Endpoint      string // ARM endpoint; empty is Azure public cloud
	Subscription  string
	ResourceGroup string
	NIC           string
	Auth          string // AuthManagedIdentity, AuthDefault or AuthStatic
	ClientID      string // user-assigned managed identity, optional
	StaticToken   string
	// PollInterval is the wait between polls of a long-running NIC write when ARM's answer
	// carries no Retry-After (ARM's own Retry-After is always followed, up to a minute).
	// Default DefaultPollInterval.
	PollInterval time.Duration
	// FastPoll polls from 20 ms up to 1 s instead: for a local mockarm, whose writes take
	// milliseconds. An http:// endpoint (only ever mockarm) implies it.
	FastPoll bool
	// Transport carries every request instead of azcore's HTTP client (tests).
	Transport policy.Transporter
	ScaleSet  string // uniform scale set of the node VM; empty for a standalone VM
	Instance  string // scale-set instance ID
	// Identity tunes the managed identity credential's HTTP client (its retries; a test
	// transport). Zero is azidentity's own defaults.
	Identity azcore.ClientOptions
}

// Client reads and writes one NIC. It is safe for concurrent use, but cns makes one write
// at a time.
type Client struct {
	nics    *armnetwork.InterfacesClient
	subnets *armnetwork.SubnetsClient
	rg, nic string
	poll    pollPolicy

	mu      sync.Mutex
	subnetP map[string]netip.Prefix // subnet ID → prefix; a subnet's prefix does not change under a NIC
}

// New builds the SDK clients.
func New(cfg Config) (*Client, error) {
	cred, err := Credential(cfg)
	if err != nil {
		return nil, err
	}
	return NewWithCredential(cfg, cred)
}

// NewWithCredential builds the SDK clients over cred.
func NewWithCredential(cfg Config, cred azcore.TokenCredential) (*Client, error) {
	if cfg.Subscription == "" || cfg.ResourceGroup == "" || cfg.NIC == "" {
		return nil, errors.New("subscription, resource group and NIC name are required")
	}
	opts, poll, err := armOptions(cfg)
	if err != nil {
		return nil, err
	}
	nics, err := armnetwork.NewInterfacesClient(cfg.Subscription, cred, opts)
	if err != nil {
		return nil, fmt.Errorf("interfaces client: %w", err)
	}
	subnets, err := armnetwork.NewSubnetsClient(cfg.Subscription, cred, opts)
	if err != nil {
		return nil, fmt.Errorf("subnets client: %w", err)
	}
	return &Client{nics: nics, subnets: subnets, rg: cfg.ResourceGroup, nic: cfg.NIC,
		poll: poll, subnetP: map[string]netip.Prefix{}}, nil
}

// nicSnapshot is the NIC as ARM last answered it, kept in cloud.NIC.Snapshot: a write decided
// on that view PUTs it back with its changes, without reading it again.
type nicSnapshot struct{ iface armnetwork.Interface }

// GetNIC reads the NIC.
func (c *Client) GetNIC(ctx context.Context) (cloud.NIC, error) {
	resp, err := c.nics.Get(ctx, c.rg, c.nic, nil)
	if err != nil {
		return cloud.NIC{}, classify(fmt.Errorf("get NIC %s: %w", c.nic, err))
	}
	return c.view(ctx, resp.Interface)
}

// view is the pool's view of iface, carrying iface as its snapshot.
func (c *Client) view(ctx context.Context, iface armnetwork.Interface) (cloud.NIC, error) {
	n, err := c.toNIC(ctx, iface)
	n.Snapshot = nicSnapshot{iface}
	return n, err
}

// UpdateIPConfigs applies ch to the NIC with If-Match ch.ETag, waiting for the long-running
// operation. It builds on ch.Snapshot when that is the version ch was decided on; otherwise it
// reads the NIC first, and if the etag read is not ch.ETag the change was decided on a stale
// view and KindConflict is returned without writing. A snapshot gone stale meets ARM's 412,
// also KindConflict.
func (c *Client) UpdateIPConfigs(ctx context.Context, ch cloud.Change) (cloud.NIC, error) {
	iface, err := c.writeBase(ctx, ch)
	if err != nil {
		return cloud.NIC{}, err
	}
	if iface.Properties == nil {
		return cloud.NIC{}, &cloud.Error{Kind: cloud.KindRejected, Err: errors.New("NIC has no properties")}
	}
	primary, err := primaryConfig(iface)
	if err != nil {
		return cloud.NIC{}, &cloud.Error{Kind: cloud.KindRejected, Err: err}
	}
	remove := map[netip.Addr]bool{}
	for _, a := range ch.Remove {
		remove[a] = true
	}
	// Every configuration cns did not create is carried through exactly as read; only
	// cns's own may be removed.
	var configs []*armnetwork.InterfaceIPConfiguration
	for _, ipc := range iface.Properties.IPConfigurations {
		if a, ok := configAddr(ipc); ok && remove[a] && ipc != primary && own(ipc) {
			continue
		}
		configs = append(configs, ipc)
	}
	for range ch.Add {
		configs = append(configs, &armnetwork.InterfaceIPConfiguration{
			Name: to.Ptr(cloud.OwnConfigPrefix + randomSuffix()),
			Properties: &armnetwork.InterfaceIPConfigurationPropertiesFormat{
				Primary:                   to.Ptr(false),
				PrivateIPAllocationMethod: to.Ptr(armnetwork.IPAllocationMethodDynamic),
				PrivateIPAddressVersion:   to.Ptr(armnetwork.IPVersionIPv4),
				Subnet:                    &armnetwork.Subnet{ID: primary.Properties.Subnet.ID},
			},
		})
	}
	props := *iface.Properties // a snapshot is the caller's: change a copy
	props.IPConfigurations = configs
	iface.Properties = &props
	// If-Match is not an option of BeginCreateOrUpdate; it rides on the context, as does
	// the capture of the PUT's answer, whose Retry-After says when to poll first.
	var put *http.Response
	wctx := policy.WithCaptureResponse(policy.WithHTTPHeader(ctx, http.Header{"If-Match": []string{str(iface.Etag)}}), &put)
	poller, err := c.nics.BeginCreateOrUpdate(wctx, c.rg, c.nic, iface, nil)
	if err != nil {
		return cloud.NIC{}, classify(fmt.Errorf("put NIC %s: %w", c.nic, err))
	}
	if err := drive(ctx, poller, c.poll, put); err != nil {
		return cloud.NIC{}, accepted(classify(fmt.Errorf("poll NIC %s update: %w", c.nic, err)))
	}
	res, err := poller.Result(ctx)
	if err != nil {
		return cloud.NIC{}, classify(fmt.Errorf("NIC %s update: %w", c.nic, err))
	}
	return c.view(ctx, res.Interface)
}

// writeBase is the NIC a write of ch changes: ch's snapshot if it is of the version ch was
// decided on, else the NIC read now, which must be that version. A snapshot someone else's
// write has made stale costs a write that ARM refuses (412) rather than a read; that happens
// only with a second writer, while the read was paid by every write.
func (c *Client) writeBase(ctx context.Context, ch cloud.Change) (armnetwork.Interface, error) {
	if s, ok := ch.Snapshot.(nicSnapshot); ok && ch.ETag != "" && str(s.iface.Etag) == ch.ETag {
		return s.iface, nil
	}
	resp, err := c.nics.Get(ctx, c.rg, c.nic, nil)
	if err != nil {
		return armnetwork.Interface{}, classify(fmt.Errorf("get NIC %s: %w", c.nic, err))
	}
	if etag := str(resp.Etag); ch.ETag != "" && etag != ch.ETag {
		return armnetwork.Interface{}, &cloud.Error{Kind: cloud.KindConflict, Err: fmt.Errorf("NIC changed: etag %s, decided on %s", etag, ch.ETag)}
	}
	return resp.Interface, nil
}

// DefaultPollInterval is the wait between polls of a NIC write when ARM sends no
// Retry-After. ARM's network provider answers NIC writes with Retry-After: 10, and a NIC
// write takes seconds; polling faster only spends the subscription's read quota, which
// every node of a cluster shares.
const DefaultPollInterval = 10 * time.Second

// maxRetryAfter bounds one wait on ARM's Retry-After, so a wild value cannot hold a write
// past reason (the caller's deadline bounds the whole write anyway).
const maxRetryAfter = time.Minute

// pollPolicy says how long to wait before each poll of a long-running operation.
type pollPolicy struct {
	interval time.Duration // production: without Retry-After
	fast     bool          // mockarm: 0, 20 ms, 40 ms … 1 s
}

// delay is the wait before poll number attempt (0 is the first, right after the PUT), given
// the Retry-After of the latest answer (0 if none).
func (p pollPolicy) delay(attempt int, retryAfter time.Duration) time.Duration {
	if p.fast {
		d := time.Duration(0)
		if attempt > 0 {
			d = min(20*time.Millisecond<<min(attempt-1, 10), time.Second)
		}
		if retryAfter > 0 {
			d = min(retryAfter, time.Second)
		}
		return d
	}
	if retryAfter > 0 {
		return min(retryAfter, maxRetryAfter)
	}
	return p.interval
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// randomSuffix is the 12 hex digits after cloud.OwnConfigPrefix.
func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func primaryConfig(iface armnetwork.Interface) (*armnetwork.InterfaceIPConfiguration, error) {
	for _, ipc := range iface.Properties.IPConfigurations {
		if ipc != nil && ipc.Properties != nil && (ipc.Properties.Primary != nil && *ipc.Properties.Primary) {
			if ipc.Properties.Subnet == nil || ipc.Properties.Subnet.ID == nil {
				return nil, errors.New("primary ip configuration has no subnet")
			}
			return ipc, nil
		}
	}
	return nil, errors.New("NIC has no primary ip configuration")
}

// own reports whether cns created ipc: its name, an IPv4 address in it.
func own(ipc *armnetwork.InterfaceIPConfiguration) bool {
	_, ok := configAddr(ipc)
	return ok && ipc.Name != nil && cloud.OwnConfigName(*ipc.Name)
}

// configAddr is the IPv4 address of ipc.
func configAddr(ipc *armnetwork.InterfaceIPConfiguration) (netip.Addr, bool) {
	if ipc == nil || ipc.Properties == nil || ipc.Properties.PrivateIPAddress == nil {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(*ipc.Properties.PrivateIPAddress)
	return a, err == nil && a.Is4()
}

func (c *Client) toNIC(ctx context.Context, iface armnetwork.Interface) (cloud.NIC, error) {
	n := cloud.NIC{ID: str(iface.ID), ETag: str(iface.Etag)}
	if iface.Properties == nil {
		return n, &cloud.Error{Kind: cloud.KindRejected, Err: errors.New("NIC has no properties")}
	}
	if iface.Properties.ProvisioningState != nil {
		n.ProvisioningState = string(*iface.Properties.ProvisioningState)
	}
	primary, err := primaryConfig(iface)
	if err != nil {
		return n, &cloud.Error{Kind: cloud.KindRejected, Err: err}
	}
	n.Primary, _ = configAddr(primary)
	for _, ipc := range iface.Properties.IPConfigurations {
		if ipc == nil || ipc == primary {
			continue
		}
		if a, ok := configAddr(ipc); ok && own(ipc) {
			n.Secondaries = append(n.Secondaries, a)
			if n.Names == nil {
				n.Names = map[netip.Addr]string{}
			}
			n.Names[a] = str(ipc.Name)
			continue
		}
		f := cloud.ForeignConfig{Name: str(ipc.Name)}
		if ipc.Properties != nil && ipc.Properties.PrivateIPAddress != nil {
			f.Addr, _ = netip.ParseAddr(*ipc.Properties.PrivateIPAddress)
		}
		n.Foreign = append(n.Foreign, f)
	}
	slices.SortFunc(n.Secondaries, netip.Addr.Compare)
	n.Subnet, err = c.subnetPrefix(ctx, *primary.Properties.Subnet.ID)
	return n, err
}

func (c *Client) subnetPrefix(ctx context.Context, id string) (netip.Prefix, error) {
	c.mu.Lock()
	p, ok := c.subnetP[id]
	c.mu.Unlock()
	if ok {
		return p, nil
	}
	rid, err := arm.ParseResourceID(id)
	if err != nil || rid.Parent == nil {
		return p, &cloud.Error{Kind: cloud.KindRejected, Err: fmt.Errorf("subnet ID %q: %w", id, err)}
	}
	resp, err := c.subnets.Get(ctx, rid.ResourceGroupName, rid.Parent.Name, rid.Name, nil)
	if err != nil {
		return p, classify(fmt.Errorf("get subnet %s: %w", rid.Name, err))
	}
	var s string
	if pr := resp.Properties; pr != nil && pr.AddressPrefix != nil {
		s = *pr.AddressPrefix
	} else if pr != nil && len(pr.AddressPrefixes) > 0 {
		s = str(pr.AddressPrefixes[0])
	}
	if p, err = netip.ParsePrefix(s); err != nil {
		return p, &cloud.Error{Kind: cloud.KindRejected, Err: fmt.Errorf("subnet %s prefix %q: %w", rid.Name, s, err)}
	}
	c.mu.Lock()
	c.subnetP[id] = p.Masked()
	c.mu.Unlock()
	return p.Masked(), nil
}

// accepted reclassifies a failure to follow a write ARM had accepted: whatever the poll
// answered (a 404 from an ARM that lost the operation, say), the write's outcome is unknown,
// which is KindUnavailable, not a rejection of the write.
func accepted(err error) error {
	var ce *cloud.Error
	if errors.As(err, &ce) && ce.Kind == cloud.KindRejected {
		ce.Kind = cloud.KindUnavailable
	}
	return err
}

// classify turns an SDK error into a cloud.Error that says what to do next.
func classify(err error) error {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return &cloud.Error{Kind: cloud.KindUnavailable, Err: err}
	}
	ce := &cloud.Error{Code: re.ErrorCode, Status: re.StatusCode, Err: err}
	if re.RawResponse != nil {
		ce.RetryAfter = RetryAfter(re.RawResponse.Header)
	}
	code := strings.ToLower(re.ErrorCode)
	switch {
	case code == "subnetisfull":
		ce.Kind = cloud.KindSubnetFull
	case strings.Contains(code, "limitreached") || strings.Contains(code, "maxipconfig"):
		ce.Kind = cloud.KindNICFull
	case re.StatusCode == http.StatusTooManyRequests:
		ce.Kind = cloud.KindThrottled
	case re.StatusCode == http.StatusPreconditionFailed:
		ce.Kind = cloud.KindConflict
	case re.StatusCode == http.StatusConflict:
		ce.Kind = cloud.KindBusy
	case re.StatusCode >= 500:
		ce.Kind = cloud.KindUnavailable
	case re.StatusCode < 400:
		ce.Kind = cloud.KindFailed // a long-running operation that ended Failed
	default:
		ce.Kind = cloud.KindRejected
	}
	return ce
}

// RetryAfter reads ARM's retry hints: retry-after-ms, x-ms-retry-after-ms, Retry-After
// (seconds or an HTTP date); zero when there is none.
func RetryAfter(h http.Header) time.Duration {
	for _, k := range []string{"Retry-After-Ms", "X-Ms-Retry-After-Ms"} {
		if ms, err := strconv.Atoi(h.Get(k)); err == nil && ms > 0 {
			return time.Duration(ms) * time.Millisecond
		}
	}
	v := h.Get("Retry-After")
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
