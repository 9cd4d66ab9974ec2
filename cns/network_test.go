package cns_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vnet-cni/vnet-cni/cns"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	"github.com/vnet-cni/vnet-cni/test/stack"
)

func request(t *testing.T, s *stack.Stack, network, id, netns string) (*cnsv1.RequestIPsResponse, error) {
	t.Helper()
	return s.IPAM.RequestIPs(s.Ctx(), &cnsv1.RequestIPsRequest{ContainerId: id, Ifname: "eth0", Netns: netns, Network: network})
}

// byID lists the allocations as id -> network.
func byID(s *stack.Stack) map[string]string {
	out := map[string]string{}
	for _, a := range s.Allocations() {
		out[a.GetContainerId()] = a.GetNetwork()
	}
	return out
}

func TestGCOfOneNetworkKeepsOtherNetworksAllocations(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	for _, r := range []struct{ network, id string }{{"a", "a-live"}, {"a", "a-gone"}, {"b", "b-live"}} {
		if _, err := request(t, s, r.network, r.id, "/run/netns/"+r.id); err != nil {
			t.Fatal(err)
		}
	}
	gc, err := s.IPAM.GarbageCollect(s.Ctx(), &cnsv1.GarbageCollectRequest{Network: "a",
		ValidAttachments: []*cnsv1.Attachment{{ContainerId: "a-live", Ifname: "eth0"}}})
	if err != nil || gc.GetReleased() != 1 || gc.GetKept() != 1 {
		t.Fatalf("GC of network a: %v %v, want 1 released, 1 kept", gc, err)
	}
	if got := fmt.Sprint(byID(s)); got != "map[a-live:a b-live:b]" {
		t.Fatalf("allocations after GC of network a: %s", got)
	}
}

func TestRequestForKeyHeldByAnotherAttachmentIsRefused(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	first, err := request(t, s, "a", "c", "/run/netns/one")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, network, netns string }{
		{"another netns", "a", "/run/netns/two"},
		{"another network", "b", "/run/netns/one"},
	} {
		if _, err := request(t, s, tc.network, "c", tc.netns); status.Code(err) != codes.AlreadyExists {
			t.Fatalf("%s: %v, want AlreadyExists", tc.name, err)
		}
	}
	again, err := request(t, s, "a", "c", "/run/netns/one")
	if err != nil || again.GetIpConfigs()[0].GetAddress() != first.GetIpConfigs()[0].GetAddress() {
		t.Fatalf("retry by the owner: %v %v, want the same address", again, err)
	}
	rel, err := s.IPAM.ReleaseIPs(s.Ctx(), &cnsv1.ReleaseIPsRequest{ContainerId: "c", Ifname: "eth0", Network: "b"})
	if err != nil || rel.GetReleased() || len(s.Allocations()) != 1 {
		t.Fatalf("release from network b: %v %v, allocations %v; want the key kept", rel, err, s.Allocations())
	}
}

func TestRequestWithoutNetworkBelongsToLegacyNetwork(t *testing.T) {
	s := stack.Start(t, stack.Options{Config: func(c *cns.Config) { c.Pool.LegacyNetwork = "old-net" }})
	if _, err := s.Request(s.Ctx(), "c"); err != nil {
		t.Fatal(err)
	}
	if got := byID(s)["c"]; got != "old-net" {
		t.Fatalf("network of a request without one: %q, want old-net", got)
	}
}

// A state file written before networks were recorded holds v1 records (no "v", no network).
// cns migrates each to the legacy network and rewrites it as v2.
func TestStateWithoutNetworksIsMigratedToLegacyNetwork(t *testing.T) {
	s := stack.Start(t, stack.Options{Config: func(c *cns.Config) { c.Pool.LegacyNetwork = "old-net" }})
	a, err := s.Request(s.Ctx(), "c")
	if err != nil {
		t.Fatal(err)
	}
	s.StopCNS()
	path := filepath.Join(s.Dir, "cns.db")
	v1 := fmt.Sprintf(`{"addr":%q,"owner":{"ContainerID":"c","IfName":"eth0","PodNamespace":"ns","PodName":"p","Netns":"/run/netns/x"},"assignedAt":"2026-01-01T00:00:00Z"}`, a)
	editDB(t, path, func(b *bolt.Bucket) error { return b.Put([]byte("c\x00eth0"), []byte(v1)) })
	s.StartCNS()
	got := s.Allocations()
	if len(got) != 1 || got[0].GetAddress() != a.String() || got[0].GetNetwork() != "old-net" || got[0].GetPodName() != "p" {
		t.Fatalf("allocations after migration: %v", got)
	}
	s.StopCNS()
	var rec map[string]any
	editDB(t, path, func(b *bolt.Bucket) error { return json.Unmarshal(b.Get([]byte("c\x00eth0")), &rec) })
	if rec["v"] != float64(2) || rec["network"] != "old-net" {
		t.Fatalf("record after migration: %v, want v2 with network old-net", rec)
	}
	s.StartCNS()
}

func editDB(t *testing.T, path string, fn func(*bolt.Bucket) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return fn(tx.Bucket([]byte("allocations"))) }); err != nil {
		t.Fatal(err)
	}
}
