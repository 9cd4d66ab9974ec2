package mockarm

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

func TestARMAnswers401WithoutATokenItIssuedOrAccepts(t *testing.T) {
	cfg := DefaultConfig()
	cfg.RequireToken, cfg.StaticTokens, cfg.Log = true, []string{"make-run"}, slog.New(slog.DiscardHandler)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	primary, err := s.CreateVM(cfg.Subscription, cfg.ResourceGroup, "vm0", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	// The node's token, from IMDS as the node at its primary address asks for it.
	req := httptest.NewRequest(http.MethodGet, "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com", nil)
	req.Header.Set("Metadata", "true")
	req.RemoteAddr = primary.String() + ":40000"
	rec := httptest.NewRecorder()
	s.IMDS().ServeHTTP(rec, req)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &tok) != nil || tok.AccessToken == "" {
		t.Fatalf("token endpoint: %d %s", rec.Code, rec.Body)
	}
	other, _ := New(cfg) // another mockarm signs with another key
	forged, _ := other.issue(VMID(cfg.Subscription, cfg.ResourceGroup, "vm0"), "x", time.Now())
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"", 401}, {"Basic abc", 401}, {"Bearer nonsense", 401}, {"Bearer " + forged, 401},
		{"Bearer make-run", 200}, {"Bearer " + tok.AccessToken, 200},
	} {
		r := httptest.NewRequest(http.MethodGet, NICID(cfg.Subscription, cfg.ResourceGroup, "vm0-nic")+"?api-version=2025-01-01", nil)
		if tc.auth != "" {
			r.Header.Set("Authorization", tc.auth)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("Authorization %q: %d, want %d (%s)", tc.auth, w.Code, tc.want, w.Body)
		}
	}
}

func TestIMDSKnowsTheCallerByItsAddress(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Log = slog.New(slog.DiscardHandler)
	s, _ := New(cfg)
	vm, _ := s.CreateVM(cfg.Subscription, cfg.ResourceGroup, "vm0", netip.Addr{})
	ss, _ := s.CreateScaleSetVM(cfg.Subscription, cfg.ResourceGroup, "pool", "4", "pool-nic", netip.Addr{})
	for _, tc := range []struct {
		from     string
		metadata bool
		want     int
		name     string
	}{
		{vm.String(), true, 200, "vm0"}, {ss.String(), true, 200, "pool_4"},
		{"10.240.9.9", true, 404, ""}, {vm.String(), false, 400, ""},
	} {
		r := httptest.NewRequest(http.MethodGet, "/metadata/instance?api-version=2021-02-01", nil)
		if tc.metadata {
			r.Header.Set("Metadata", "true")
		}
		r.RemoteAddr = tc.from + ":1234"
		w := httptest.NewRecorder()
		s.IMDS().ServeHTTP(w, r)
		var doc struct{ Compute struct{ Name string } }
		_ = json.Unmarshal(w.Body.Bytes(), &doc)
		if w.Code != tc.want || doc.Compute.Name != tc.name {
			t.Errorf("from %s (Metadata %v): %d %q, want %d %q", tc.from, tc.metadata, w.Code, doc.Compute.Name, tc.want, tc.name)
		}
	}
}
