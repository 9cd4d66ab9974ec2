package azure_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vnet-cni/vnet-cni/cns/cloud"
	"github.com/vnet-cni/vnet-cni/cns/cloud/azure"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
)

type fixture struct {
	mock *mockarm.Server
	srv  *httptest.Server
	c    *azure.Client
	cfg  mockarm.Config
}

func setup(t *testing.T, tune func(*mockarm.Config)) *fixture {
	t.Helper()
	cfg := mockarm.DefaultConfig()
	cfg.AutoCreateNICs = true
	cfg.StatePath = t.TempDir() + "/mockarm.json"
	if tune != nil {
		tune(&cfg)
	}
	m, err := mockarm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	c, err := azure.New(azure.Config{Endpoint: srv.URL, Subscription: cfg.Subscription, ResourceGroup: cfg.ResourceGroup,
		NIC: "nic0", Auth: azure.AuthStatic, StaticToken: "t"})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{mock: m, srv: srv, c: c, cfg: cfg}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestStaleETagIsConflictWithoutWriting(t *testing.T) {
	f := setup(t, nil)
	nic, _ := f.c.GetNIC(ctx(t))
	if _, err := f.c.UpdateIPConfigs(ctx(t), cloud.Change{ETag: nic.ETag, Add: 1}); err != nil {
		t.Fatal(err)
	}
	writes := f.mock.Stats().Writes
	_, err := f.c.UpdateIPConfigs(ctx(t), cloud.Change{ETag: nic.ETag, Add: 1})
	if cloud.KindOf(err) != cloud.KindConflict || f.mock.Stats().Writes != writes {
		t.Fatalf("write on a stale etag: %v (writes %d -> %d)", err, writes, f.mock.Stats().Writes)
	}
}

func TestMockRejectsWrongIfMatch(t *testing.T) {
	f := setup(t, nil)
	f.c.GetNIC(ctx(t))
	url := f.srv.URL + mockarm.NICID(f.cfg.Subscription, f.cfg.ResourceGroup, "nic0") + "?api-version=2025-01-01"
	req, _ := http.NewRequest(http.MethodPut, url, bytes.NewBufferString(`{"properties":{"ipConfigurations":[]}}`))
	req.Header.Set("If-Match", `W/"stale"`)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPreconditionFailed {
		t.Fatalf("PUT with a wrong If-Match: %d, want 412", resp.StatusCode)
	}
}

func TestSlowWriteIsPolledPromptly(t *testing.T) {
	f := setup(t, func(c *mockarm.Config) { c.Latency = 1200 * time.Millisecond })
	nic, _ := f.c.GetNIC(ctx(t))
	start := time.Now()
	got, err := f.c.UpdateIPConfigs(ctx(t), cloud.Change{ETag: nic.ETag, Add: 2})
	took := time.Since(start)
	if err != nil || len(got.Secondaries) != 2 || got.ProvisioningState != "Succeeded" {
		t.Fatalf("slow write: %+v, %v", got, err)
	}
	// The SDK's PollUntilDone would wait 30 s between polls; we follow Retry-After.
	if took < time.Second || took > 5*time.Second {
		t.Fatalf("a 1.2 s write took %s", took)
	}
}

func TestMockStatePersistsAcrossRestart(t *testing.T) {
	f := setup(t, nil)
	nic, _ := f.c.GetNIC(ctx(t))
	grown, _ := f.c.UpdateIPConfigs(ctx(t), cloud.Change{ETag: nic.ETag, Add: 2})
	m2, err := mockarm.New(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.srv.Config.Handler = m2
	again, err := f.c.GetNIC(ctx(t))
	if err != nil || !slices.Equal(again.Secondaries, grown.Secondaries) {
		t.Fatalf("after mockarm restart: %v %v, want %v", again.Secondaries, err, grown.Secondaries)
	}
	// The allocator was rebuilt: the next address is not one already taken.
	more, _ := f.c.UpdateIPConfigs(ctx(t), cloud.Change{ETag: again.ETag, Add: 1})
	if len(more.Secondaries) != 3 {
		t.Fatalf("after one more: %v", more.Secondaries)
	}
}

// TestForeignIPConfigsAreReportedAndCarriedThrough: ip configurations cns did not create
// (an operator's "web", an IPv6 one, a name that only looks like cns's) are reported as
// foreign, and a write carries them through unchanged even when asked to remove them.
func TestForeignIPConfigsAreReportedAndCarriedThrough(t *testing.T) {
	f := setup(t, nil)
	if _, err := f.c.GetNIC(ctx(t)); err != nil {
		t.Fatal(err)
	}
	web, err := f.mock.AddIPConfig(f.cfg.Subscription, f.cfg.ResourceGroup, "nic0", "web", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	web6, err := f.mock.AddIPConfig(f.cfg.Subscription, f.cfg.ResourceGroup, "nic0", "web6", netip.MustParseAddr("fd00::5"))
	if err != nil {
		t.Fatal(err)
	}
	look, err := f.mock.AddIPConfig(f.cfg.Subscription, f.cfg.ResourceGroup, "nic0", "cns-web", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	want := []cloud.ForeignConfig{{Name: "web", Addr: web}, {Name: "web6", Addr: web6}, {Name: "cns-web", Addr: look}}
	nic, err := f.c.GetNIC(ctx(t))
	if err != nil || len(nic.Secondaries) != 0 || !slices.Equal(nic.Foreign, want) {
		t.Fatalf("NIC with three foreign configurations: own %v, foreign %+v, %v; want foreign %+v", nic.Secondaries, nic.Foreign, err, want)
	}
	after, err := f.c.UpdateIPConfigs(ctx(t), cloud.Change{ETag: nic.ETag, Add: 2, Remove: []netip.Addr{web, look}})
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Secondaries) != 2 || !slices.Equal(after.Foreign, want) {
		t.Fatalf("after a write asked to remove foreign configurations: own %v, foreign %+v", after.Secondaries, after.Foreign)
	}
}

// TestFailedWriteCanLeaveItsConfigsOnTheNIC: mockarm's keepConfigs mode ends a write
// Failed with its configurations left on the NIC, as ARM can; writing the NIC again brings
// it back to Succeeded.
func TestFailedWriteCanLeaveItsConfigsOnTheNIC(t *testing.T) {
	f := setup(t, nil)
	nic, err := f.c.GetNIC(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.mock.Inject(mockarm.Fault{Op: "put-nic", FailLRO: true, KeepConfigs: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.UpdateIPConfigs(ctx(t), cloud.Change{ETag: nic.ETag, Add: 4}); cloud.KindOf(err) != cloud.KindFailed {
		t.Fatalf("write: %v, want kind failed", err)
	}
	failed, err := f.c.GetNIC(ctx(t))
	if err != nil || failed.ProvisioningState != cloud.ProvisioningFailed || len(failed.Secondaries) != 4 {
		t.Fatalf("after the failed write: %s with %v (%v), want Failed with the 4 configurations", failed.ProvisioningState, failed.Secondaries, err)
	}
	repaired, err := f.c.UpdateIPConfigs(ctx(t), cloud.Change{ETag: failed.ETag})
	if err != nil || repaired.ProvisioningState != cloud.ProvisioningSucceeded || !slices.Equal(repaired.Secondaries, failed.Secondaries) {
		t.Fatalf("rewrite: %s with %v (%v), want Succeeded with the same configurations", repaired.ProvisioningState, repaired.Secondaries, err)
	}
}
