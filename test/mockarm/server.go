package mockarm

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"
)

// Fabric is told where VNet addresses live so it can route them: every address in add is
// reachable via the node address it maps to; every address in remove no longer exists.
type Fabric interface {
	Program(add map[netip.Addr]netip.Addr, remove []netip.Addr) error
}

// Config configures a Server.
type Config struct {
	Subnet         netip.Prefix  // the VNet subnet every NIC draws from
	Subscription   string        // subscription of the VNet
	ResourceGroup  string        // resource group of the VNet
	VNet           string        // VNet name
	SubnetName     string        // subnet name
	Location       string        // region, used in operation URLs
	Latency        time.Duration // how long a NIC write stays InProgress
	WriteBurst     int           // write token bucket size per subscription (Azure: 200)
	WriteRate      float64       // write tokens per second (Azure: 10)
	MaxIPConfigs   int           // ip configurations per NIC (Azure: 256)
	StatePath      string        // JSON state file; empty keeps state in memory only
	AutoCreateNICs bool          // a GET of an unknown NIC creates it
	Admin          bool          // serve /admin/ (fault injection, NIC creation)
	RequireToken   bool          // ARM calls need a bearer token mockarm issued (IMDS) or a StaticTokens one; else 401
	StaticTokens   []string      // bearer tokens accepted besides issued ones (make run's --auth static)
	Fabric         Fabric        // optional
	Log            *slog.Logger
}

// DefaultConfig returns Azure's limits on a 10.240.0.0/16 subnet.
func DefaultConfig() Config {
	return Config{Subnet: netip.MustParsePrefix("10.240.0.0/16"), Subscription: "00000000-0000-0000-0000-000000000000",
		ResourceGroup: "vnet-rg", VNet: "vnet", SubnetName: "nodes", Location: "local",
		WriteBurst: 200, WriteRate: 10, MaxIPConfigs: 256, Log: slog.Default()}
}

// Server is the mock ARM. Its handler is safe for concurrent use.
type Server struct {
	cfg Config
	mux *http.ServeMux

	mu      sync.Mutex
	subnet  *subnet
	nics    map[string]*armnetwork.Interface // lower-case ID → NIC
	names   map[string]string                // lower-case VM ID → computer name, when not the default
	busy    map[string]*operation            // lower-case NIC ID → operation in progress
	ops     map[string]*operation
	buckets map[string]*bucket
	faults  []*Fault
	stats   Stats
	routes  map[netip.Addr]netip.Addr // what the fabric has been told
	// fabricStale: the last programming failed (a restored NIC's node not reachable yet, as
	// when mockarm starts from its state file before the VNet's nodes exist); every later
	// call retries until the fabric matches the NICs.
	fabricStale bool
	// tokenKey signs the tokens IMDS issues; persisted with the state.
	tokenKey []byte
}

// Stats counts calls, for tests that check cns does not hammer a throttled API.
type Stats struct {
	Gets, Puts, OperationPolls, Throttled, Faults, Writes int
	// PreconditionFailed counts writes refused by If-Match (412): two writers raced on a NIC.
	PreconditionFailed int
}

type operation struct {
	id       string
	nicID    string
	done     time.Time
	fail     *Fault
	prev     *armnetwork.Interface
	status   string
	errorMsg string
}

// New builds a server, loading the state file if there is one.
func New(cfg Config) (*Server, error) {
	if !cfg.Subnet.Addr().Is4() || cfg.Subnet.Bits() > 29 {
		return nil, fmt.Errorf("subnet %s: want IPv4 of /29 or larger", cfg.Subnet)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Server{cfg: cfg, subnet: newSubnet(cfg.Subnet), nics: map[string]*armnetwork.Interface{},
		busy: map[string]*operation{}, ops: map[string]*operation{}, buckets: map[string]*bucket{},
		routes: map[netip.Addr]netip.Addr{}}
	if err := s.load(); err != nil {
		return nil, err
	}
	if s.tokenKey == nil {
		s.tokenKey = newTokenKey()
	}
	s.mux = http.NewServeMux()
	nic := "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/networkInterfaces/{nic}"
	s.mux.HandleFunc("GET "+nic, s.arm(s.getNIC))
	s.mux.HandleFunc("PUT "+nic, s.arm(s.putNIC))
	s.mux.HandleFunc("GET /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/{subnet}", s.arm(s.getSubnet))
	s.mux.HandleFunc("GET /subscriptions/{sub}/providers/Microsoft.Network/locations/{loc}/operations/{op}", s.arm(s.getOperation))
	s.computeRoutes()
	if cfg.Admin {
		s.adminRoutes()
	}
	s.mu.Lock()
	s.programFabric()
	s.mu.Unlock()
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Serve answers on l until ctx ends.
func (s *Server) Serve(ctx context.Context, l net.Listener) error { return serveHTTP(ctx, l, s) }

func serveHTTP(ctx context.Context, l net.Listener, h http.Handler) error {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// SubnetID is the ARM ID of the configured subnet.
func (s *Server) SubnetID() string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Network/virtualNetworks/%s/subnets/%s",
		s.cfg.Subscription, s.cfg.ResourceGroup, s.cfg.VNet, s.cfg.SubnetName)
}

// NICID is the ARM ID of a NIC.
func NICID(sub, rg, name string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Network/networkInterfaces/%s", sub, rg, name)
}

type handler func(r *http.Request) (status int, body any, hdr http.Header, err error)

// arm wraps a handler with api-version checking, fault injection, settling of finished
// operations and ARM's error format.
func (s *Server) arm(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("api-version") == "" {
			writeErr(w, apiErr(400, "MissingApiVersionParameter", "the api-version query parameter is required"))
			return
		}
		if !s.authenticate(w, r) {
			return
		}
		s.settle(time.Now())
		if f := s.takeFault(r); f != nil {
			if f.Delay > 0 {
				select {
				case <-time.After(f.Delay.D()):
				case <-r.Context().Done():
					return
				}
			}
			if f.Status != 0 {
				writeErr(w, &apiError{f.Status, cmp.Or(f.Code, http.StatusText(f.Status)), "injected fault", f.RetryAfter})
				return
			}
		}
		status, body, hdr, err := h(r)
		var he *headerError
		if errors.As(err, &he) {
			for k, v := range he.hdr {
				w.Header()[k] = v
			}
		}
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				ae = &apiError{500, "InternalServerError", err.Error(), 0}
			}
			writeErr(w, ae)
			return
		}
		for k, v := range hdr {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("x-ms-request-id", newETag()[3:19])
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}
}

func writeErr(w http.ResponseWriter, e *apiError) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("x-ms-error-code", e.Code)
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": e.Code, "message": e.Message}})
}

func (s *Server) getNIC(r *http.Request) (int, any, http.Header, error) {
	id := NICID(r.PathValue("sub"), r.PathValue("rg"), r.PathValue("nic"))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Gets++
	n, ok := s.nics[strings.ToLower(id)]
	if !ok && s.cfg.AutoCreateNICs {
		var err error
		if n, err = s.createNICLocked(id, netip.Addr{}, ""); err != nil {
			return 0, nil, nil, err
		}
		ok = true
	}
	if !ok {
		return 0, nil, nil, apiErr(404, "NotFound", "network interface "+id+" not found")
	}
	return 200, snapshot(n), http.Header{"Etag": {*n.Etag}}, nil
}

// snapshot encodes a NIC while s.mu is held: the answer must not be read while an
// operation settling in the background changes the NIC.
func snapshot(n *armnetwork.Interface) json.RawMessage {
	b, err := json.Marshal(n)
	if err != nil {
		panic(fmt.Sprintf("mockarm: encode NIC: %v", err)) // armnetwork types always encode
	}
	return b
}

func (s *Server) putNIC(r *http.Request) (int, any, http.Header, error) {
	sub := r.PathValue("sub")
	id := NICID(sub, r.PathValue("rg"), r.PathValue("nic"))
	var body armnetwork.Interface
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 4<<20)).Decode(&body); err != nil {
		return 0, nil, nil, &apiError{400, "InvalidRequestContent", err.Error(), 0}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	status, n, hdr, err := s.writeNICLocked(r, sub, id, &body)
	if err != nil {
		return 0, nil, nil, err
	}
	return status, snapshot(n), hdr, nil
}

// RemainingWritesHeader is ARM's count of writes the subscription has left in its bucket.
const RemainingWritesHeader = "X-Ms-Ratelimit-Remaining-Subscription-Writes"

// headerError is an error whose answer carries more headers.
type headerError struct {
	err error
	hdr http.Header
}

func (e *headerError) Error() string { return e.err.Error() }
func (e *headerError) Unwrap() error { return e.err }

// writeNICLocked applies a new NIC body through the write bucket, If-Match and the
// long-running operation; the NIC PUT and the scale-set VM update both come here.
func (s *Server) writeNICLocked(r *http.Request, sub, id string, body *armnetwork.Interface) (status int, n *armnetwork.Interface, hdr http.Header, err error) {
	s.stats.Puts++
	b := s.bucket(sub)
	wait, ok := b.take(time.Now(), s.cfg.WriteBurst, s.cfg.WriteRate)
	if s.cfg.WriteBurst > 0 && s.cfg.WriteRate > 0 {
		// As ARM does, every answer to a write says how many writes the subscription has left,
		// whatever its outcome (a rejected write has spent its token too).
		left := strconv.Itoa(int(math.Max(0, math.Floor(b.tokens))))
		defer func() {
			if err != nil {
				err = &headerError{err: err, hdr: http.Header{RemainingWritesHeader: {left}}}
			} else {
				hdr.Set(RemainingWritesHeader, left)
			}
		}()
	}
	if !ok {
		s.stats.Throttled++
		return 0, nil, nil, &apiError{429, "SubscriptionRequestsThrottled",
			"number of write requests for subscription exceeded the limit", int(math.Ceil(wait.Seconds()))}
	}
	key := strings.ToLower(id)
	cur := s.nics[key]
	if op := s.busy[key]; op != nil {
		return 0, nil, nil, &apiError{409, "AnotherOperationInProgress", "operation " + op.id + " is in progress on the NIC", 1}
	}
	if m := r.Header.Get("If-Match"); m != "" && (cur == nil || (m != "*" && m != *cur.Etag)) {
		s.stats.PreconditionFailed++
		return 0, nil, nil, &apiError{412, "PreconditionFailed", "If-Match " + m + " does not match the NIC's etag", 0}
	}
	n, err = s.subnet.apply(id, cur, body, s.SubnetID(), s.cfg.MaxIPConfigs)
	if err != nil {
		return 0, nil, nil, err
	}
	s.stats.Writes++
	op := &operation{id: newETag()[3:19], nicID: key, done: time.Now().Add(s.cfg.Latency), prev: cur, status: "InProgress"}
	op.fail = s.takeLROFault()
	s.ops[op.id] = op
	s.nics[key] = n
	hdr = http.Header{"Azure-Asyncoperation": {fmt.Sprintf("%s/subscriptions/%s/providers/Microsoft.Network/locations/%s/operations/%s?api-version=%s",
		baseURL(r), sub, s.cfg.Location, op.id, r.URL.Query().Get("api-version"))}}
	if s.cfg.Latency > 0 || op.fail != nil {
		s.busy[key] = op
		n.Properties.ProvisioningState = ptr(armnetwork.ProvisioningStateUpdating)
		if s.cfg.Latency >= time.Second {
			hdr.Set("Retry-After", strconv.Itoa(int(s.cfg.Latency.Seconds())))
		}
		time.AfterFunc(s.cfg.Latency, func() { s.settle(time.Now()) })
	} else {
		op.status = "Succeeded"
		s.programFabric()
	}
	s.save()
	status = 200
	if cur == nil {
		status = 201
	}
	return status, n, hdr, nil
}

// settle finishes every operation whose time has come: success programs the fabric,
// failure puts the NIC back as it was.
func (s *Server) settle(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	for key, op := range s.busy {
		if now.Before(op.done) {
			continue
		}
		delete(s.busy, key)
		changed = true
		n := s.nics[key]
		if op.fail == nil {
			op.status = "Succeeded"
			n.Properties.ProvisioningState = ptr(armnetwork.ProvisioningStateSucceeded)
			continue
		}
		op.status, op.errorMsg = "Failed", "injected long-running operation failure"
		if op.fail.KeepConfigs {
			kept, props := *n, *n.Properties
			kept.Etag, props.ProvisioningState = ptr(newETag()), ptr(armnetwork.ProvisioningStateFailed)
			kept.Properties = &props
			s.nics[key] = &kept
			continue
		}
		s.revertLocked(key, n, op.prev)
	}
	if changed || s.fabricStale {
		s.programFabric()
	}
	if changed {
		s.save()
	}
}

// revertLocked puts a NIC back to prev after a failed operation, with a new etag.
func (s *Server) revertLocked(key string, cur, prev *armnetwork.Interface) {
	for _, a := range nicAddrs(cur) {
		delete(s.subnet.used, a)
	}
	if prev == nil {
		delete(s.nics, key)
		return
	}
	for name, a := range nicAddrs(prev) {
		s.subnet.used[a] = *prev.ID + "/ipConfigurations/" + name
	}
	r := *prev
	r.Etag = ptr(newETag())
	props := *prev.Properties
	props.ProvisioningState = ptr(armnetwork.ProvisioningStateFailed)
	r.Properties = &props
	s.nics[key] = &r
}

func (s *Server) getOperation(r *http.Request) (int, any, http.Header, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.OperationPolls++
	op, ok := s.ops[r.PathValue("op")]
	if !ok {
		return 0, nil, nil, &apiError{404, "NotFound", "operation not found", 0}
	}
	body := map[string]any{"name": op.id, "status": op.status}
	hdr := http.Header{}
	if op.status == "Failed" {
		body["error"] = map[string]string{"code": "InternalServerError", "message": op.errorMsg}
	}
	if left := time.Until(op.done); op.status == "InProgress" && left >= time.Second {
		hdr.Set("Retry-After", strconv.Itoa(int(left.Seconds())))
	}
	return 200, body, hdr, nil
}

func (s *Server) getSubnet(r *http.Request) (int, any, http.Header, error) {
	if !strings.EqualFold(r.PathValue("vnet"), s.cfg.VNet) || !strings.EqualFold(r.PathValue("subnet"), s.cfg.SubnetName) {
		return 0, nil, nil, &apiError{404, "NotFound", "subnet not found", 0}
	}
	s.mu.Lock()
	s.stats.Gets++
	s.mu.Unlock()
	return 200, armnetwork.Subnet{ID: ptr(s.SubnetID()), Name: ptr(s.cfg.SubnetName),
		Properties: &armnetwork.SubnetPropertiesFormat{AddressPrefix: ptr(s.cfg.Subnet.String()),
			ProvisioningState: ptr(armnetwork.ProvisioningStateSucceeded)}}, nil, nil
}

func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// CreateNIC makes a NIC with one primary ip configuration at primary (or the next free
// address when primary is invalid). An existing NIC is left as it is.
func (s *Server) CreateNIC(sub, rg, name string, primary netip.Addr) (netip.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := NICID(sub, rg, name)
	if n, ok := s.nics[strings.ToLower(id)]; ok {
		return primaryAddr(n), nil
	}
	n, err := s.createNICLocked(id, primary, "")
	if err != nil {
		return netip.Addr{}, err
	}
	return primaryAddr(n), nil
}

// createNICLocked makes a NIC with its primary ip configuration; vm, if set, is the ID of the
// VM it is attached to.
func (s *Server) createNICLocked(id string, primary netip.Addr, vm string) (*armnetwork.Interface, error) {
	ipc := &armnetwork.InterfaceIPConfiguration{Name: ptr("ipconfig1"), Properties: &armnetwork.InterfaceIPConfigurationPropertiesFormat{
		Primary: ptr(true), PrivateIPAllocationMethod: ptr(armnetwork.IPAllocationMethodDynamic)}}
	if primary.IsValid() {
		ipc.Properties.PrivateIPAddress = ptr(primary.String())
		ipc.Properties.PrivateIPAllocationMethod = ptr(armnetwork.IPAllocationMethodStatic)
	}
	body := &armnetwork.Interface{Location: ptr(s.cfg.Location),
		Properties: &armnetwork.InterfacePropertiesFormat{IPConfigurations: []*armnetwork.InterfaceIPConfiguration{ipc}}}
	n, err := s.subnet.apply(id, nil, body, s.SubnetID(), s.cfg.MaxIPConfigs)
	if err != nil {
		return nil, err
	}
	n.Properties.MacAddress = ptr(MACFor(primaryAddr(n)))
	if vm != "" {
		n.Properties.VirtualMachine = &armnetwork.SubResource{ID: ptr(vm)}
	}
	s.nics[strings.ToLower(id)] = n
	s.save()
	s.cfg.Log.Info("created NIC", "id", id, "primary", primaryAddr(n))
	return n, nil
}

// AddIPConfig adds an ip configuration called name to a NIC, as an operator's tool would
// (a "web" configuration behind a load balancer, say). An IPv4 addr (or none: the next free
// one) comes from the subnet; an IPv6 addr makes a dual-stack configuration. It returns the
// address.
func (s *Server) AddIPConfig(sub, rg, nic, name string, addr netip.Addr) (netip.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := NICID(sub, rg, nic)
	key := strings.ToLower(id)
	cur, ok := s.nics[key]
	if !ok {
		return netip.Addr{}, apiErr(404, "NotFound", "network interface "+id+" not found")
	}
	if s.busy[key] != nil {
		return netip.Addr{}, apiErr(409, "AnotherOperationInProgress", "an operation is in progress on the NIC")
	}
	props := &armnetwork.InterfaceIPConfigurationPropertiesFormat{PrivateIPAllocationMethod: ptr(armnetwork.IPAllocationMethodDynamic)}
	if addr.IsValid() {
		props.PrivateIPAddress = ptr(addr.String())
		props.PrivateIPAllocationMethod = ptr(armnetwork.IPAllocationMethodStatic)
	}
	if addr.Is6() {
		props.PrivateIPAddressVersion = ptr(armnetwork.IPVersionIPv6)
	}
	body := *cur
	bp := *cur.Properties
	bp.IPConfigurations = append(append([]*armnetwork.InterfaceIPConfiguration(nil), cur.Properties.IPConfigurations...),
		&armnetwork.InterfaceIPConfiguration{Name: ptr(name), Properties: props})
	body.Properties = &bp
	n, err := s.subnet.apply(id, cur, &body, s.SubnetID(), s.cfg.MaxIPConfigs)
	if err != nil {
		return netip.Addr{}, err
	}
	s.nics[key] = n
	s.programFabric()
	s.save()
	return nicAddrs(n)[name], nil
}

// NICAddrs returns the secondary IPv4 addresses of a NIC (every configuration's, whoever
// made it), for tests.
func (s *Server) NICAddrs(sub, rg, name string) ([]netip.Addr, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nics[strings.ToLower(NICID(sub, rg, name))]
	if !ok {
		return nil, false
	}
	return secondaryAddrs(n), true
}

// Stats returns the call counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// programFabric tells the fabric the difference between the routes the NICs imply and what
// it was told before. Called with s.mu held.
func (s *Server) programFabric() {
	if s.cfg.Fabric == nil {
		return
	}
	want := map[netip.Addr]netip.Addr{}
	for key, n := range s.nics {
		if s.busy[key] != nil && s.busy[key].prev != nil {
			n = s.busy[key].prev // not yet in effect
		}
		node := primaryAddr(n)
		for _, a := range secondaryAddrs(n) {
			want[a] = node
		}
	}
	add := map[netip.Addr]netip.Addr{}
	var remove []netip.Addr
	for a, node := range want {
		if s.routes[a] != node {
			add[a] = node
		}
	}
	for a := range s.routes {
		if _, ok := want[a]; !ok {
			remove = append(remove, a)
		}
	}
	if len(add) == 0 && len(remove) == 0 {
		return
	}
	if err := s.cfg.Fabric.Program(add, remove); err != nil {
		if !s.fabricStale {
			s.cfg.Log.Warn("program fabric; retrying at every call until it succeeds", "err", err)
		}
		s.fabricStale = true
		return
	}
	s.routes, s.fabricStale = want, false
}
