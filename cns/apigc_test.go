package cns

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/vnet-cni/vnet-cni/cns/k8s"
	"github.com/vnet-cni/vnet-cni/cns/store"
	"github.com/vnet-cni/vnet-cni/ipampool"
)

// podView is a PodSource whose cache and live answers the test sets apart, to play a stale
// cache, a failed watch or an unreachable API server.
type podView struct {
	synced bool
	cache  map[string]k8s.Pod // ns/name
	live   map[string]k8s.Pod
	err    error
}

func (v *podView) Snapshot() ([]k8s.Pod, time.Time, bool) {
	var ps []k8s.Pod
	for _, p := range v.cache {
		ps = append(ps, p)
	}
	return ps, time.Time{}, v.synced
}
func (v *podView) Cached(ns, name string) (k8s.Pod, bool) {
	p, ok := v.cache[ns+"/"+name]
	return p, ok
}
func (v *podView) Live(_ context.Context, ns, name string) (k8s.Pod, bool, error) {
	if v.err != nil {
		return k8s.Pod{}, false, v.err
	}
	p, ok := v.live[ns+"/"+name]
	return p, ok, nil
}

type nopStore struct{}

func (nopStore) Load() (store.State, error)                                  { return store.State{}, nil }
func (nopStore) PutAllocation(store.Allocation) error                        { return nil }
func (nopStore) ReleaseAllocation(ipampool.Key, netip.Addr, time.Time) error { return nil }
func (nopStore) MarkPendingRelease([]netip.Addr) error                       { return nil }
func (nopStore) ForgetAddrs([]netip.Addr) error                              { return nil }

func gcManager(t *testing.T, owner ipampool.Owner) *Manager {
	t.Helper()
	m, err := NewManager(DefaultConfig().Pool, nil, nopStore{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1000, 0)
	if err := m.pool.Restore(ipampool.Entry{Addr: netip.MustParseAddr("10.0.0.5"), State: ipampool.Assigned, Owner: owner, Since: at, AssignedAt: at}); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPodGCReleasesOnlyConfirmedGonePodsAfterGrace(t *testing.T) {
	owner := ipampool.Owner{Key: ipampool.Key{ContainerID: "c1", IfName: "eth0"}, PodNamespace: "ns", PodName: "p", PodUID: "uid-1"}
	same := k8s.Pod{Namespace: "ns", Name: "p", UID: "uid-1"}
	other := k8s.Pod{Namespace: "ns", Name: "p", UID: "uid-2"}
	mirror := k8s.Pod{Namespace: "ns", Name: "p", UID: "mirror-uid", MirrorOf: "uid-1"}
	const grace = time.Minute
	for _, tc := range []struct {
		name     string
		view     podView
		released bool
	}{
		{"gone from cache and API server", podView{synced: true}, true},
		{"recreated under another UID", podView{synced: true, cache: map[string]k8s.Pod{"ns/p": other}, live: map[string]k8s.Pod{"ns/p": other}}, true},
		{"informer not synced", podView{synced: false}, false},
		{"cache stale, API server has the pod", podView{synced: true, live: map[string]k8s.Pod{"ns/p": same}}, false},
		{"API server unreachable", podView{synced: true, err: errors.New("connection refused")}, false},
		{"pod present", podView{synced: true, cache: map[string]k8s.Pod{"ns/p": same}, live: map[string]k8s.Pod{"ns/p": same}}, false},
		{"static pod seen through its mirror", podView{synced: true, cache: map[string]k8s.Pod{"ns/p": mirror}, live: map[string]k8s.Pod{"ns/p": mirror}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := gcManager(t, owner)
			g := newAPIGC(m, &tc.view, grace)
			t0 := time.Unix(2000, 0)
			if n := g.round(context.Background(), t0); n != 0 {
				t.Fatalf("released %d on first sight; the grace period must pass first", n)
			}
			if n := g.round(context.Background(), t0.Add(grace-time.Second)); n != 0 {
				t.Fatalf("released %d before the grace period ended", n)
			}
			n := g.round(context.Background(), t0.Add(grace))
			if got := n == 1; got != tc.released {
				t.Errorf("released after grace = %v, want %v", got, tc.released)
			}
			_, held := m.pool.Lookup(owner.Key)
			if held == tc.released {
				t.Errorf("pool still holds the allocation = %v, want %v", held, !tc.released)
			}
		})
	}
}

func TestUnplacedCountsBoundPodsWithoutAnAddress(t *testing.T) {
	entries := []ipampool.Entry{
		{State: ipampool.Assigned, Owner: ipampool.Owner{PodNamespace: "ns", PodName: "a", PodUID: "ua"}},
		{State: ipampool.Assigned, Owner: ipampool.Owner{PodNamespace: "ns", PodName: "b"}}, // runtime passed no UID
		{State: ipampool.Assigned, Owner: ipampool.Owner{PodNamespace: "ns", PodName: "s", PodUID: "static-uid"}},
		{State: ipampool.Available},
	}
	pods := []k8s.Pod{
		{Namespace: "ns", Name: "a", UID: "ua"},
		{Namespace: "ns", Name: "b", UID: "ub"},
		{Namespace: "ns", Name: "s", UID: "mirror", MirrorOf: "static-uid"},
		{Namespace: "ns", Name: "c", UID: "uc"},
		{Namespace: "ns", Name: "d", UID: "ud"},
	}
	if n := unplaced(pods, entries); n != 2 {
		t.Errorf("unplaced = %d, want 2 (c and d)", n)
	}
}
