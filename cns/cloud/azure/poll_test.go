package azure_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vnet-cni/vnet-cni/cns/cloud"
	"github.com/vnet-cni/vnet-cni/cns/cloud/azure"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
)

// handlerTransport serves azcore's requests from an http.Handler in memory, so a test in a
// synctest bubble runs the SDK, its poller and mockarm on virtual time.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) Do(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	in := req.Clone(req.Context())
	if in.URL.Scheme == "https" {
		in.TLS = &tls.ConnectionState{} // so mockarm writes https URLs for its operations
	}
	in.Host = req.URL.Host
	t.h.ServeHTTP(rec, in)
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

// pollCounter stands in front of mockarm: it records when each operation-status poll
// arrived and replaces mockarm's Retry-After by what the test wants ARM to say ("" = none).
type pollCounter struct {
	mock       http.Handler
	retryAfter string

	mu    sync.Mutex
	start time.Time
	polls []time.Duration // since start
}

func (p *pollCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := httptest.NewRecorder()
	p.mock.ServeHTTP(rec, r)
	if strings.Contains(r.URL.Path, "/operations/") {
		p.mu.Lock()
		p.polls = append(p.polls, time.Since(p.start))
		p.mu.Unlock()
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.Header().Del("Retry-After")
	if p.retryAfter != "" && (r.Method == http.MethodPut || strings.Contains(r.URL.Path, "/operations/")) {
		w.Header().Set("Retry-After", p.retryAfter)
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// TestLROPollingHonoursRetryAfterInProduction drives a 25 s NIC write through the real SDK
// client against an https endpoint (production mode) and counts the operation polls.
func TestLROPollingHonoursRetryAfterInProduction(t *testing.T) {
	tests := []struct {
		name       string
		retryAfter string
		fast       bool
		wantPolls  int
		wantGap    time.Duration // least time between two polls
	}{
		// ARM asks for 7 s: polls at 7, 14, 21, 28 s.
		{name: "Retry-After 7 s is followed", retryAfter: "7", wantPolls: 4, wantGap: 7 * time.Second},
		// No Retry-After: the production default of 10 s, polls at 10, 20, 30 s.
		{name: "no Retry-After: 10 s default", wantPolls: 3, wantGap: 10 * time.Second},
		// Fast polling, the explicit mockarm option: at once, then 20 ms doubling up to 1 s.
		{name: "fast polling for mockarm", fast: true, wantPolls: 31},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mc := mockarm.DefaultConfig()
				mc.AutoCreateNICs = true
				mc.Latency = 25 * time.Second
				mc.Log = quiet()
				m, err := mockarm.New(mc)
				if err != nil {
					t.Fatal(err)
				}
				pc := &pollCounter{mock: m, retryAfter: tc.retryAfter}
				c, err := azure.New(azure.Config{Endpoint: "https://management.example", Subscription: mc.Subscription,
					ResourceGroup: mc.ResourceGroup, NIC: "nic0", Auth: azure.AuthStatic, StaticToken: "t",
					Transport: handlerTransport{pc}, FastPoll: tc.fast})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				nic, err := c.GetNIC(ctx)
				if err != nil {
					t.Fatal(err)
				}
				pc.start = time.Now()
				got, err := c.UpdateIPConfigs(ctx, cloud.Change{ETag: nic.ETag, Add: 2})
				if err != nil || len(got.Secondaries) != 2 {
					t.Fatalf("write: %+v, %v", got, err)
				}
				pc.mu.Lock()
				defer pc.mu.Unlock()
				if len(pc.polls) != tc.wantPolls {
					t.Fatalf("%d operation polls at %v, want %d", len(pc.polls), pc.polls, tc.wantPolls)
				}
				prev := time.Duration(0)
				for _, at := range pc.polls {
					if at-prev < tc.wantGap {
						t.Fatalf("polls at %v: a gap under %s", pc.polls, tc.wantGap)
					}
					prev = at
				}
			})
		})
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }
