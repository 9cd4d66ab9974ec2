package mockarm

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"
)

// IMDSAddr is where Azure VMs (and azidentity, which hard-codes it) reach the Instance
// Metadata Service.
var IMDSAddr = netip.MustParseAddr("169.254.169.254")

// IMDS is the Instance Metadata Service of the emulated VNet: instance metadata and managed
// identity tokens. Like Azure's, it knows the calling VM by where the request comes from,
// here the source address, which is the VM's primary VNet address.
func (s *Server) IMDS() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metadata/instance", s.imds(s.instanceMetadata))
	mux.HandleFunc("GET /metadata/identity/oauth2/token", s.imds(s.identityToken))
	return mux
}

// ServeIMDS answers IMDS on l until ctx ends.
func (s *Server) ServeIMDS(ctx context.Context, l net.Listener) error {
	return serveHTTP(ctx, l, s.IMDS())
}

type imdsHandler func(r *http.Request, vm vmInfo) (any, error)

// vmInfo is the VM behind a NIC.
type vmInfo struct {
	sub, rg, name, id, scaleSet string
	nic                         *armnetwork.Interface
}

// imds checks the Metadata header as IMDS does, applies injected faults (ops "imds-instance",
// "imds-token") and finds the calling VM.
func (s *Server) imds(h imdsHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata") != "true" {
			imdsErr(w, http.StatusBadRequest, "bad_request", "Required metadata header not specified")
			return
		}
		if f := s.takeFault(r); f != nil {
			if f.Body != "" {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(f.Body))
				return
			}
			if f.Status != 0 {
				if f.RetryAfter > 0 {
					w.Header().Set("Retry-After", itoa(f.RetryAfter))
				}
				imdsErr(w, f.Status, "injected", "injected fault")
				return
			}
		}
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		addr, _ := netip.ParseAddr(host)
		vm, ok := s.vmByAddr(addr.Unmap())
		if !ok {
			imdsErr(w, http.StatusNotFound, "not_found", "no VM in the VNet has address "+host)
			return
		}
		body, err := h(r, vm)
		if err != nil {
			imdsErr(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(body)
	}
}

func imdsErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": msg})
}

// vmByAddr finds the VM whose NIC's primary address is a.
func (s *Server) vmByAddr(a netip.Addr) (vmInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.nics {
		if primaryAddr(n) != a {
			continue
		}
		parts := strings.Split(strings.Trim(*n.ID, "/"), "/") // subscriptions/S/resourceGroups/R/providers/P/T/...
		vm := vmInfo{sub: parts[1], rg: parts[3], nic: n}
		switch {
		case len(parts) == 12 && strings.EqualFold(parts[6], "virtualMachineScaleSets"):
			vm.scaleSet, vm.name = parts[7], parts[7]+"_"+parts[9]
			vm.id = ScaleSetVMID(vm.sub, vm.rg, parts[7], parts[9])
		case n.Properties.VirtualMachine != nil && n.Properties.VirtualMachine.ID != nil:
			vm.id = *n.Properties.VirtualMachine.ID
			vm.name = vm.id[strings.LastIndex(vm.id, "/")+1:]
		default:
			return vmInfo{}, false // a NIC no VM holds
		}
		return vm, true
	}
	return vmInfo{}, false
}

func (s *Server) instanceMetadata(r *http.Request, vm vmInfo) (any, error) {
	ips := []map[string]string{{"privateIpAddress": primaryAddr(vm.nic).String(), "publicIpAddress": ""}}
	for _, a := range secondaryAddrs(vm.nic) {
		ips = append(ips, map[string]string{"privateIpAddress": a.String(), "publicIpAddress": ""})
	}
	mac := strings.ReplaceAll(deref(vm.nic.Properties.MacAddress), "-", "")
	orchestration := ""
	if vm.scaleSet != "" {
		orchestration = "Uniform"
	}
	return map[string]any{
		"compute": map[string]any{"subscriptionId": vm.sub, "resourceGroupName": vm.rg, "name": vm.name, "resourceId": vm.id,
			"vmScaleSetName": vm.scaleSet, "location": s.cfg.Location, "osType": "Linux", "orchestrationMode": orchestration},
		"network": map[string]any{"interface": []any{map[string]any{"macAddress": mac,
			"ipv4": map[string]any{"ipAddress": ips, "subnet": []any{map[string]string{
				"address": s.cfg.Subnet.Masked().Addr().String(), "prefix": itoa(s.cfg.Subnet.Bits())}}}}}},
	}, nil
}

// identityToken issues a managed identity token for the calling VM, in IMDS's format.
func (s *Server) identityToken(r *http.Request, vm vmInfo) (any, error) {
	resource := r.URL.Query().Get("resource")
	if resource == "" || r.URL.Query().Get("api-version") == "" {
		return nil, errString("resource and api-version are required")
	}
	now := time.Now()
	tok, exp := s.issue(vm.id, resource, now)
	return map[string]string{"access_token": tok, "token_type": "Bearer", "resource": resource,
		"expires_in": itoa(int(exp.Sub(now).Seconds())), "expires_on": itoa(int(exp.Unix())), "not_before": itoa(int(now.Unix())),
		"client_id": "00000000-0000-0000-0000-00000000c0de"}, nil
}

type errString string

func (e errString) Error() string { return string(e) }

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// NodeTransport carries requests for IMDS (169.254.169.254) to the server's IMDS as if the
// node at Node sent them, as the emulated VNet's router delivers them; other requests go out
// as usual. In-process tests give it to azidentity (as its transport, so the credential
// stays azidentity's own) and to the IMDS client.
type NodeTransport struct {
	Server *Server
	Node   netip.Addr
}

// Do implements azcore's policy.Transporter.
func (t NodeTransport) Do(req *http.Request) (*http.Response, error) { return t.RoundTrip(req) }

// RoundTrip implements http.RoundTripper.
func (t NodeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Hostname() != IMDSAddr.String() {
		return http.DefaultTransport.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.RemoteAddr = netip.AddrPortFrom(t.Node, 40000).String()
	rec := httptest.NewRecorder()
	t.Server.IMDS().ServeHTTP(rec, r)
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}
