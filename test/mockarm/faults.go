package mockarm

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// Duration is a time.Duration that reads and writes as "1.5s" in JSON.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// Fault is injected into the next Count matching calls.
type Fault struct {
	// Op selects calls: "get-nic", "put-nic", "get-subnet", "get-operation", "any", or the
	// IMDS calls "imds-instance" and "imds-token" ("any" never matches those).
	Op string `json:"op"`
	// Count is how many calls it applies to (default 1).
	Count int `json:"count"`
	// Status answers with this HTTP status and Code instead of serving the call.
	Status int    `json:"status,omitempty"`
	Code   string `json:"code,omitempty"`
	// RetryAfter is sent in seconds with Status.
	RetryAfter int `json:"retryAfter,omitempty"`
	// Delay holds the call before answering.
	Delay Duration `json:"delay,omitempty"`
	// Body answers 200 with this raw body (IMDS ops only), e.g. not JSON.
	Body string `json:"body,omitempty"`
	// FailLRO lets the NIC write be accepted and its long-running operation end Failed.
	FailLRO bool `json:"failLRO,omitempty"`
	// KeepConfigs, with FailLRO, leaves the written ip configurations on the NIC when the
	// operation fails, with the NIC's provisioningState Failed: ARM can end a failed write
	// so, and the configurations' fate is then unknown until the NIC is written again.
	KeepConfigs bool `json:"keepConfigs,omitempty"`
}

var faultOps = map[string]bool{"get-nic": true, "put-nic": true, "get-subnet": true, "get-operation": true, "any": true,
	"imds-instance": true, "imds-token": true}

// Inject queues a fault.
func (s *Server) Inject(f Fault) error {
	if !faultOps[f.Op] {
		return fmt.Errorf("fault op %q: want get-nic, put-nic, get-subnet, get-operation, any, imds-instance or imds-token", f.Op)
	}
	if f.FailLRO && f.Op != "put-nic" {
		return fmt.Errorf("failLRO applies to put-nic only")
	}
	if f.KeepConfigs && !f.FailLRO {
		return fmt.Errorf("keepConfigs applies with failLRO only")
	}
	if f.Count <= 0 {
		f.Count = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
	return nil
}

// ClearFaults drops every queued fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

func opOf(r *http.Request) string {
	switch p := r.URL.Path; {
	case strings.HasPrefix(p, "/metadata/identity/"):
		return "imds-token"
	case strings.HasPrefix(p, "/metadata/"):
		return "imds-instance"
	case strings.Contains(p, "/operations/"):
		return "get-operation"
	case strings.Contains(p, "/subnets/"):
		return "get-subnet"
	case r.Method == http.MethodPut:
		return "put-nic"
	}
	return "get-nic"
}

// takeFault consumes the first queued fault (other than LRO failures, which the PUT handler
// takes) matching r.
func (s *Server) takeFault(r *http.Request) *Fault {
	op := opOf(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.consumeLocked(func(f *Fault) bool {
		return !f.FailLRO && (f.Op == op || f.Op == "any" && !strings.HasPrefix(op, "imds-"))
	})
}

func (s *Server) takeLROFault() *Fault {
	return s.consumeLocked(func(f *Fault) bool { return f.FailLRO })
}

// consumeLocked uses up one count of the first fault match selects and returns a copy.
func (s *Server) consumeLocked(match func(*Fault) bool) *Fault {
	for i, f := range s.faults {
		if !match(f) {
			continue
		}
		c := *f
		if f.Count--; f.Count == 0 {
			s.faults = append(s.faults[:i], s.faults[i+1:]...)
		}
		s.stats.Faults++
		return &c
	}
	return nil
}

// bucket is a token bucket for one subscription's writes.
type bucket struct {
	tokens float64
	last   time.Time
}

func (s *Server) bucket(sub string) *bucket {
	b, ok := s.buckets[strings.ToLower(sub)]
	if !ok {
		b = &bucket{tokens: float64(s.cfg.WriteBurst)}
		s.buckets[strings.ToLower(sub)] = b
	}
	return b
}

// take spends a token, or says how long until one is there.
func (b *bucket) take(now time.Time, burst int, rate float64) (time.Duration, bool) {
	if burst <= 0 || rate <= 0 {
		return 0, true
	}
	if !b.last.IsZero() {
		b.tokens = min(float64(burst), b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return time.Duration((1 - b.tokens) / rate * float64(time.Second)), false
}

// SetLatency changes how long NIC writes stay in progress.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg.Latency = d
}

func (s *Server) adminRoutes() {
	s.mux.HandleFunc("POST /admin/faults", func(w http.ResponseWriter, r *http.Request) {
		var f Fault
		if err := json.NewDecoder(r.Body).Decode(&f); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := s.Inject(f); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	s.mux.HandleFunc("DELETE /admin/faults", func(w http.ResponseWriter, _ *http.Request) {
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	})
	s.mux.HandleFunc("PUT /admin/latency", func(w http.ResponseWriter, r *http.Request) {
		var d Duration
		if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.SetLatency(d.D())
		w.WriteHeader(http.StatusNoContent)
	})
	s.mux.HandleFunc("POST /admin/nics", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Subscription, ResourceGroup, Name string
			Primary                           netip.Addr
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Name == "" {
			http.Error(w, fmt.Sprintf("want {name, primary?, subscription?, resourceGroup?}: %v", err), http.StatusBadRequest)
			return
		}
		p, err := s.CreateNIC(cmp.Or(req.Subscription, s.cfg.Subscription), cmp.Or(req.ResourceGroup, s.cfg.ResourceGroup), req.Name, req.Primary)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"primary": p.String()})
	})
	s.mux.HandleFunc("POST /admin/ipconfigs", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Subscription, ResourceGroup, NIC, Name string
			Address                                netip.Addr
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.NIC == "" || req.Name == "" {
			http.Error(w, fmt.Sprintf("want {nic, name, address?, subscription?, resourceGroup?}: %v", err), http.StatusBadRequest)
			return
		}
		a, err := s.AddIPConfig(cmp.Or(req.Subscription, s.cfg.Subscription), cmp.Or(req.ResourceGroup, s.cfg.ResourceGroup), req.NIC, req.Name, req.Address)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"address": a.String()})
	})
	s.mux.HandleFunc("GET /admin/state", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		out := map[string]any{"stats": s.stats, "faults": s.faults, "subnet": s.cfg.Subnet.String()}
		nics := map[string]any{}
		for _, n := range s.nics {
			nics[*n.Name] = map[string]any{"etag": *n.Etag, "primary": primaryAddr(n), "secondaries": secondaryAddrs(n),
				"provisioningState": *n.Properties.ProvisioningState}
		}
		out["nics"] = nics
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
}
