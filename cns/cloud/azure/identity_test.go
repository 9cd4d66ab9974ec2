package azure_test

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/vnet-cni/vnet-cni/cns/cloud"
	"github.com/vnet-cni/vnet-cni/cns/cloud/azure"
	"github.com/vnet-cni/vnet-cni/cns/imds"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
)

// identity serves mockarm with tokens required and a standalone VM and a scale-set VM,
// and returns managed-identity configs for each node.
func identity(t *testing.T) (*mockarm.Server, azure.Config, azure.Config) {
	t.Helper()
	cfg := mockarm.DefaultConfig()
	cfg.RequireToken, cfg.Log = true, slog.New(slog.DiscardHandler)
	m, err := mockarm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	vmAddr, err := m.CreateVM(cfg.Subscription, cfg.ResourceGroup, "vm0", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	ssAddr, err := m.CreateScaleSetVM(cfg.Subscription, cfg.ResourceGroup, "pool", "0", "pool-nic", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	node := func(a netip.Addr) azure.Config {
		c := azure.Config{Endpoint: srv.URL, Auth: azure.AuthManagedIdentity}
		c.Identity.Transport = mockarm.NodeTransport{Server: m, Node: a}
		c.Identity.Retry = policy.RetryOptions{MaxRetries: 2, RetryDelay: time.Millisecond, MaxRetryDelay: 2 * time.Millisecond}
		return c
	}
	return m, node(vmAddr), node(ssAddr)
}

// instance reads mockarm's IMDS as the node of cfg would.
func instance(t *testing.T, cfg azure.Config) imds.Instance {
	t.Helper()
	tr := cfg.Identity.Transport.(mockarm.NodeTransport)
	c := &imds.Client{Endpoint: "http://" + mockarm.IMDSAddr.String(), HTTP: &http.Client{Transport: tr}}
	inst, err := c.Instance(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

func TestManagedIdentityTokenFromIMDSOpensARM(t *testing.T) {
	_, vm, ss := identity(t)
	for name, node := range map[string]azure.Config{"standalone": vm, "scale-set": ss} {
		t.Run(name, func(t *testing.T) {
			inst := instance(t, node)
			cfg := node.FromInstance(inst)
			cred, err := azure.Credential(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := azure.CheckToken(ctx(t), cfg, cred); err != nil {
				t.Fatal(err)
			}
			if cfg, err = azure.DiscoverNIC(ctx(t), cfg, cred, inst.Name, inst.MAC); err != nil {
				t.Fatal(err)
			}
			var c backend
			if cfg.ScaleSet != "" {
				c, err = azure.NewScaleSet(cfg, cred)
			} else {
				c, err = azure.NewWithCredential(cfg, cred)
			}
			if err != nil {
				t.Fatal(err)
			}
			nic, err := c.GetNIC(ctx(t))
			if err != nil || nic.Primary != inst.Addresses[0] {
				t.Fatalf("GET NIC with the managed identity token: %+v, %v (IMDS says %v)", nic, err, inst.Addresses)
			}
			wantNIC, wantSS := "vm0-nic", ""
			if name == "scale-set" {
				wantNIC, wantSS = "pool-nic", "pool"
			}
			if cfg.NIC != wantNIC || cfg.ScaleSet != wantSS {
				t.Fatalf("discovered NIC %q in scale set %q, want %q in %q", cfg.NIC, cfg.ScaleSet, wantNIC, wantSS)
			}
		})
	}
}

func TestARMRejectsATokenItDidNotIssue(t *testing.T) {
	_, vm, _ := identity(t)
	inst := instance(t, vm)
	cfg := vm.FromInstance(inst)
	cfg.NIC, cfg.Auth, cfg.StaticToken = "vm0-nic", azure.AuthStatic, "forged"
	c, err := azure.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetNIC(ctx(t))
	var ce *cloud.Error
	if cloud.KindOf(err) != cloud.KindRejected || !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
		t.Fatalf("GET NIC with a forged token: %v, want 401 rejected", err)
	}
}

func TestTokenEndpointFailuresStopBootstrapClearly(t *testing.T) {
	for _, status := range []int{500, 429} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			m, vm, _ := identity(t)
			cfg := vm.FromInstance(instance(t, vm))
			if err := m.Inject(mockarm.Fault{Op: "imds-token", Status: status, Count: 100}); err != nil {
				t.Fatal(err)
			}
			cred, err := azure.Credential(cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = azure.CheckToken(ctx(t), cfg, cred)
			if err == nil || !strings.Contains(err.Error(), "ManagedIdentityCredential") || !strings.Contains(err.Error(), "token for ARM") {
				t.Fatalf("token endpoint answering %d: %v, want an error naming the managed identity token", status, err)
			}
			if n := m.Stats().Faults; n != 3 {
				t.Fatalf("%d token requests, want 3 (azidentity's retries as configured)", n)
			}
		})
	}
}

func TestDiscoveryRefusesANICWithAnotherMAC(t *testing.T) {
	_, vm, _ := identity(t)
	inst := instance(t, vm)
	cfg := vm.FromInstance(inst)
	cred, _ := azure.Credential(cfg)
	other, _ := imds.ParseMAC("00-0D-3A-FF-FF-FF")
	_, err := azure.DiscoverNIC(ctx(t), cfg, cred, inst.Name, other)
	if err == nil || !strings.Contains(err.Error(), "no NIC of VM vm0 has the MAC 00:0d:3a:ff:ff:ff") {
		t.Fatalf("discovery with a MAC no NIC has: %v", err)
	}
}

func TestFlagsOverrideInstanceMetadata(t *testing.T) {
	inst := imds.Instance{SubscriptionID: "imds-sub", ResourceGroup: "imds-rg", Name: "pool_2", ScaleSet: "pool", InstanceID: "2"}
	got := azure.Config{ResourceGroup: "flag-rg"}.FromInstance(inst)
	if got.Subscription != "imds-sub" || got.ResourceGroup != "flag-rg" || got.ScaleSet != "pool" || got.Instance != "2" {
		t.Fatalf("%+v", got)
	}
	// A NIC named by flag is a standalone NIC: IMDS's scale set does not override it.
	got = azure.Config{NIC: "my-nic"}.FromInstance(inst)
	if got.ScaleSet != "" || got.NIC != "my-nic" {
		t.Fatalf("%+v", got)
	}
}

func TestIMDSIsAskedOnlyForWhatFlagsLeaveOut(t *testing.T) {
	for _, tc := range []struct {
		cfg  azure.Config
		want bool
	}{
		{azure.Config{}, true},
		{azure.Config{Subscription: "s", ResourceGroup: "r", NIC: "n"}, false},
		{azure.Config{Subscription: "s", ResourceGroup: "r", ScaleSet: "ss", Instance: "0"}, false},
		{azure.Config{Subscription: "s", ResourceGroup: "r", ScaleSet: "ss"}, true},
		{azure.Config{ResourceGroup: "r", NIC: "n"}, true},
	} {
		if got := tc.cfg.NeedsIMDS(); got != tc.want {
			t.Errorf("%+v: NeedsIMDS %v, want %v", tc.cfg, got, tc.want)
		}
	}
}
