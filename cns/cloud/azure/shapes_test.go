package azure_test

import (
	"context"
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vnet-cni/vnet-cni/cns/cloud"
	"github.com/vnet-cni/vnet-cni/cns/cloud/azure"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
)

// backend is the cloud as cns's pool consumes it (cns.NICAPI).
type backend interface {
	GetNIC(ctx context.Context) (cloud.NIC, error)
	UpdateIPConfigs(ctx context.Context, ch cloud.Change) (cloud.NIC, error)
}

// The two shapes of a node: a standalone VM whose NIC is written by a NIC PUT, and a uniform
// scale-set instance whose NIC is written by updating the instance.
var shapes = []string{"standalone", "scale-set"}

type shapeFixture struct {
	mock *mockarm.Server
	c    backend
	cfg  mockarm.Config
	id   string // the NIC's ARM ID
}

// setupShape serves mockarm with tokens required (the client's static token is accepted)
// and builds the backend for the shape.
func setupShape(t *testing.T, shape string, tune func(*mockarm.Config)) *shapeFixture {
	t.Helper()
	cfg := mockarm.DefaultConfig()
	cfg.StatePath = t.TempDir() + "/mockarm.json"
	cfg.RequireToken, cfg.StaticTokens = true, []string{"t"}
	if tune != nil {
		tune(&cfg)
	}
	m, err := mockarm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	ac := azure.Config{Endpoint: srv.URL, Subscription: cfg.Subscription, ResourceGroup: cfg.ResourceGroup,
		Auth: azure.AuthStatic, StaticToken: "t"}
	cred, err := azure.Credential(ac)
	if err != nil {
		t.Fatal(err)
	}
	f := &shapeFixture{mock: m, cfg: cfg}
	switch shape {
	case "standalone":
		ac.NIC = "vm0-nic"
		f.id = mockarm.NICID(cfg.Subscription, cfg.ResourceGroup, ac.NIC)
		_, err = m.CreateVM(cfg.Subscription, cfg.ResourceGroup, "vm0", netip.Addr{})
		if err == nil {
			f.c, err = azure.NewWithCredential(ac, cred)
		}
	case "scale-set":
		ac.NIC, ac.ScaleSet, ac.Instance = "pool-nic", "pool", "3"
		f.id = mockarm.ScaleSetNICID(cfg.Subscription, cfg.ResourceGroup, "pool", "3", ac.NIC)
		_, err = m.CreateScaleSetVM(cfg.Subscription, cfg.ResourceGroup, "pool", "3", ac.NIC, netip.Addr{})
		if err == nil {
			f.c, err = azure.NewScaleSet(ac, cred)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// Both shapes read and write the same NIC model. Azure keeps .0-.3 (network, gateway, DNS) and
// the broadcast address of the subnet, so the node's primary is .4 and growth starts at .5.
func TestBothShapesGrowAndShrinkTheirNIC(t *testing.T) {
	for _, shape := range shapes {
		t.Run(shape, func(t *testing.T) {
			f := setupShape(t, shape, nil)
			nic, err := f.c.GetNIC(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if nic.Primary != netip.MustParseAddr("10.240.0.4") || nic.Subnet != f.cfg.Subnet || nic.ETag == "" {
				t.Fatalf("NIC %+v", nic)
			}
			grown, err := f.c.UpdateIPConfigs(ctx(t), cloud.Change{ETag: nic.ETag, Add: 3})
			if err != nil {
				t.Fatal(err)
			}
			want := []netip.Addr{netip.MustParseAddr("10.240.0.5"), netip.MustParseAddr("10.240.0.6"), netip.MustParseAddr("10.240.0.7")}
			if !slices.Equal(grown.Secondaries, want) || grown.ETag == nic.ETag {
				t.Fatalf("after adding 3: %v (etag %s)", grown.Secondaries, grown.ETag)
			}
			shrunk, err := f.c.UpdateIPConfigs(ctx(t), cloud.Change{ETag: grown.ETag, Remove: want[:2]})
			if err != nil || !slices.Equal(shrunk.Secondaries, want[2:]) {
				t.Fatalf("after removing 2: %v, %v", shrunk.Secondaries, err)
			}
			onMock, _ := f.mock.NICAddrsByID(f.id)
			if !slices.Equal(onMock, want[2:]) {
				t.Fatalf("mockarm's NIC holds %v, want %v", onMock, want[2:])
			}
		})
	}
}

func TestBothShapesStaleETagIsConflictWithoutWriting(t *testing.T) {
	for _, shape := range shapes {
		t.Run(shape, func(t *testing.T) {
			f := setupShape(t, shape, nil)
			nic, _ := f.c.GetNIC(ctx(t))
			if _, err := f.c.UpdateIPConfigs(ctx(t), cloud.Change{ETag: nic.ETag, Add: 1}); err != nil {
				t.Fatal(err)
			}
			writes := f.mock.Stats().Writes
			_, err := f.c.UpdateIPConfigs(ctx(t), cloud.Change{ETag: nic.ETag, Add: 1})
			if cloud.KindOf(err) != cloud.KindConflict || f.mock.Stats().Writes != writes {
				t.Fatalf("write on a stale etag: %v (writes %d -> %d)", err, writes, f.mock.Stats().Writes)
			}
		})
	}
}

// A write decided on a view carries the view's snapshot and builds on it: it reads nothing
// before it writes (a standalone NIC 1 GET fewer, a scale-set instance 2), as the pool and the
// controller write on the view they just read. The snapshot stays the caller's: a write that
// failed on it leaves it as it was, so the same change retried adds what it asks and no more.
// A snapshot another writer has made stale is refused by If-Match (412) and changes nothing.
func TestBothShapesWriteOnTheirSnapshotWithoutReadingAgain(t *testing.T) {
	readsBefore := map[string]int{"standalone": 1, "scale-set": 2}
	for _, shape := range shapes {
		t.Run(shape, func(t *testing.T) {
			f := setupShape(t, shape, nil)
			write := func(ch cloud.Change) (cloud.NIC, int, error) {
				gets := f.mock.Stats().Gets
				n, err := f.c.UpdateIPConfigs(ctx(t), ch)
				return n, f.mock.Stats().Gets - gets, err
			}
			nic, err := f.c.GetNIC(ctx(t))
			if err != nil || nic.Snapshot == nil {
				t.Fatalf("GetNIC: snapshot %v, %v", nic.Snapshot, err)
			}
			grown, readsWithout, err := write(cloud.Change{ETag: nic.ETag, Add: 1})
			if err != nil {
				t.Fatal(err)
			}
			if err := f.mock.Inject(mockarm.Fault{Op: "put-nic", Status: 500, Count: 4}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := write(cloud.Change{ETag: grown.ETag, Snapshot: grown.Snapshot, Add: 2}); cloud.KindOf(err) != cloud.KindUnavailable {
				t.Fatalf("write through a persistent 500: %v", err)
			}
			again, readsWith, err := write(cloud.Change{ETag: grown.ETag, Snapshot: grown.Snapshot, Add: 2})
			if err != nil {
				t.Fatal(err)
			}
			if len(again.Secondaries) != 3 {
				t.Fatalf("the retried change (add 2 to 1) left %d addresses: %v", len(again.Secondaries), again.Secondaries)
			}
			if readsWithout-readsWith != readsBefore[shape] {
				t.Fatalf("a write read %d times with its view's snapshot and %d without, want %d fewer", readsWith, readsWithout, readsBefore[shape])
			}
			stats := f.mock.Stats()
			if _, _, err := write(cloud.Change{ETag: grown.ETag, Snapshot: grown.Snapshot, Add: 1}); cloud.KindOf(err) != cloud.KindConflict {
				t.Fatalf("write on a stale snapshot: %v, want kind conflict", err)
			}
			now := f.mock.Stats()
			if now.Writes != stats.Writes || now.PreconditionFailed != stats.PreconditionFailed+1 {
				t.Fatalf("write on a stale snapshot: writes %d -> %d, 412s %d -> %d", stats.Writes, now.Writes, stats.PreconditionFailed, now.PreconditionFailed)
			}
			if onMock, _ := f.mock.NICAddrsByID(f.id); !slices.Equal(onMock, again.Secondaries) {
				t.Fatalf("mockarm's NIC holds %v, want %v", onMock, again.Secondaries)
			}
		})
	}
}

// The fault matrix, over both shapes: each failure is classified the same way whichever
// API the write went through, quickly, and leaves no ip configuration behind.
func TestFaultsAreClassified(t *testing.T) {
	tests := []struct {
		name       string
		fault      mockarm.Fault
		tune       func(*mockarm.Config)
		want       cloud.Kind
		retryAfter time.Duration
	}{
		{name: "429 longer than azcore's max retry delay is returned, not slept on",
			fault: mockarm.Fault{Op: "put-nic", Status: 429, Code: "SubscriptionRequestsThrottled", RetryAfter: 30}, want: cloud.KindThrottled, retryAfter: 30 * time.Second},
		{name: "persistent 503", fault: mockarm.Fault{Op: "put-nic", Status: 503, Count: 10}, want: cloud.KindUnavailable},
		{name: "412 from a concurrent writer", fault: mockarm.Fault{Op: "put-nic", Status: 412, Code: "PreconditionFailed"}, want: cloud.KindConflict},
		{name: "409 operation in progress", fault: mockarm.Fault{Op: "put-nic", Status: 409, Code: "AnotherOperationInProgress"}, want: cloud.KindBusy},
		{name: "long-running operation ends Failed", fault: mockarm.Fault{Op: "put-nic", FailLRO: true}, want: cloud.KindFailed},
		{name: "401 is rejected", fault: mockarm.Fault{Op: "put-nic", Status: 401, Code: "InvalidAuthenticationToken"}, want: cloud.KindRejected},
		{name: "subnet full", tune: func(c *mockarm.Config) { c.Subnet = netip.MustParsePrefix("10.1.0.0/29") }, want: cloud.KindSubnetFull},
		{name: "NIC limit", tune: func(c *mockarm.Config) { c.MaxIPConfigs = 3 }, want: cloud.KindNICFull},
	}
	for _, shape := range shapes {
		for _, tc := range tests {
			t.Run(shape+"/"+tc.name, func(t *testing.T) {
				f := setupShape(t, shape, tc.tune)
				nic, err := f.c.GetNIC(ctx(t))
				if err != nil {
					t.Fatal(err)
				}
				if tc.fault.Op != "" {
					if err := f.mock.Inject(tc.fault); err != nil {
						t.Fatal(err)
					}
				}
				start := time.Now()
				_, err = f.c.UpdateIPConfigs(ctx(t), cloud.Change{ETag: nic.ETag, Add: 4})
				if cloud.KindOf(err) != tc.want {
					t.Fatalf("got %v (kind %s), want kind %s", err, cloud.KindOf(err), tc.want)
				}
				if got := cloud.RetryAfterOf(err); got != tc.retryAfter {
					t.Fatalf("retry after %s, want %s", got, tc.retryAfter)
				}
				if d := time.Since(start); d > 10*time.Second {
					t.Fatalf("took %s: the client slept instead of returning", d)
				}
				after, _ := f.c.GetNIC(ctx(t))
				if len(after.Secondaries) != 0 {
					t.Fatalf("a failed write left ip configurations: %v", after.Secondaries)
				}
			})
		}
	}
}

func TestBothShapesPollSlowWritesPromptly(t *testing.T) {
	for _, shape := range shapes {
		t.Run(shape, func(t *testing.T) {
			f := setupShape(t, shape, func(c *mockarm.Config) { c.Latency = 1200 * time.Millisecond })
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
		})
	}
}
