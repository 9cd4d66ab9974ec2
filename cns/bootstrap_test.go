package cns_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/vnet-cni/vnet-cni/cns"
	"github.com/vnet-cni/vnet-cni/cns/cloud/azure"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
)

// A node that cannot say who it is stops at start with the missing piece named, before it
// opens its state or its socket: never a half-configured cns.
func TestBootstrapFailsWholeWhenTheNodeCannotBeIdentified(t *testing.T) {
	mc := mockarm.DefaultConfig()
	mc.RequireToken, mc.StaticTokens, mc.Log = true, []string{"static"}, slog.New(slog.DiscardHandler)
	m, err := mockarm.New(mc)
	if err != nil {
		t.Fatal(err)
	}
	arm := httptest.NewServer(m)
	t.Cleanup(arm.Close)
	vm, err := m.CreateVM(mc.Subscription, mc.ResourceGroup, "vm0", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	// vm0's instance document, as mockarm's IMDS gives it to vm0.
	node := mockarm.NodeTransport{Server: m, Node: vm}
	doc := imdsDoc(t, node)

	tests := []struct {
		name  string
		imds  http.HandlerFunc
		tune  func(*cns.Config)
		fault *mockarm.Fault
		want  string
	}{
		{name: "IMDS 404", imds: func(w http.ResponseWriter, _ *http.Request) { http.NotFound(w, nil) }, want: "instance metadata (IMDS): GET"},
		{name: "IMDS garbage", imds: func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "<html>") }, want: "not instance metadata JSON"},
		{name: "no NIC with the MAC", imds: func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, strings.Replace(doc, strings.ReplaceAll(mockarm.MACFor(vm), "-", ""), "000D3AFFFFFF", 1))
		}, want: "no NIC of VM vm0 has the MAC 00:0d:3a:ff:ff:ff"},
		{name: "token endpoint 500", imds: func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, doc) },
			tune: func(c *cns.Config) {
				c.Azure.Auth = azure.AuthManagedIdentity
				c.Azure.Identity.Transport = node
				c.Azure.Identity.Retry = policy.RetryOptions{MaxRetries: 2, RetryDelay: time.Millisecond, MaxRetryDelay: time.Millisecond}
			},
			fault: &mockarm.Fault{Op: "imds-token", Status: 500, Count: 100}, want: "token for ARM (auth managed-identity)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.imds)
			t.Cleanup(srv.Close)
			m.ClearFaults()
			if tc.fault != nil {
				if err := m.Inject(*tc.fault); err != nil {
					t.Fatal(err)
				}
			}
			dir := t.TempDir()
			cfg := cns.DefaultConfig()
			cfg.Socket, cfg.StatePath, cfg.Pool.ReleaseSpool = filepath.Join(dir, "cns.sock"), filepath.Join(dir, "cns.db"), filepath.Join(dir, "spool")
			cfg.Listen, cfg.MetricsListen = "", ""
			cfg.IMDSEndpoint, cfg.BootstrapTimeout = srv.URL, 10*time.Second
			cfg.Azure = azure.Config{Endpoint: arm.URL, Auth: azure.AuthStatic, StaticToken: "static"}
			if tc.tune != nil {
				tc.tune(&cfg)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := cns.Run(ctx, cfg, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("cns.Run: %v, want an error containing %q", err, tc.want)
			}
			for _, f := range []string{cfg.Socket, cfg.StatePath} {
				if _, err := os.Stat(f); err == nil {
					t.Fatalf("%s exists: cns started half-configured", f)
				}
			}
		})
	}
}

func imdsDoc(t *testing.T, node mockarm.NodeTransport) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://169.254.169.254/metadata/instance?api-version=2021-02-01", nil)
	req.Header.Set("Metadata", "true")
	resp, err := node.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("IMDS for the node: %d %s", resp.StatusCode, b)
	}
	return string(b)
}
