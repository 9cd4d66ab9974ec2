package cns

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
)

// FuzzRequestValidation: any request is either refused with ErrInvalid or yields an owner
// whose fields are exactly the request's, within their limits and printable.
func FuzzRequestValidation(f *testing.F) {
	f.Add("abc123", "eth0", "/var/run/netns/x", "default", "web-0")
	f.Add("", "eth0", "", "", "")
	f.Add("c", "a/b", "", "", "")
	f.Add("c\x00", "eth0", "", "", "")
	f.Add(strings.Repeat("x", 300), "eth0", "", "", "")
	f.Fuzz(func(t *testing.T, id, ifname, netns, podNS, podName string) {
		req := &cnsv1.RequestIPsRequest{ContainerId: id, Ifname: ifname, Netns: netns, PodNamespace: podNS, PodName: podName}
		o, err := ownerOf(req, "legacy")
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("refusal not marked invalid: %v", err)
			}
			return
		}
		if o.ContainerID != id || o.IfName != ifname || o.Netns != netns || o.PodName != podName {
			t.Fatalf("owner %+v differs from request", o)
		}
		if o.Network != "legacy" {
			t.Fatalf("request without a network got network %q, want the legacy one", o.Network)
		}
		if id == "" || len(id) > maxContainerID || strings.Contains(id, "/") || ifname == "" || len(ifname) > maxIfName || strings.ContainsAny(ifname, "/ \t:") {
			t.Fatalf("accepted out-of-limit key %q %q", id, ifname)
		}
		for _, v := range []string{id, ifname, netns, podNS, podName} {
			if !utf8.ValidString(v) {
				t.Fatalf("accepted invalid UTF-8 %q", v)
			}
		}
	})
}

// FuzzGarbageCollectValidation: a GC request with any unreadable attachment is refused whole;
// attachments are read as leniently as releases.
func FuzzGarbageCollectValidation(f *testing.F) {
	f.Add("a", "eth0", "b", "eth1")
	f.Add("a", "eth0", "", "eth1")
	f.Fuzz(func(t *testing.T, id1, if1, id2, if2 string) {
		req := &cnsv1.GarbageCollectRequest{ValidAttachments: []*cnsv1.Attachment{{ContainerId: id1, Ifname: if1}, {ContainerId: id2, Ifname: if2}}}
		set, err := validSet(req)
		_, e1 := releaseKey(id1, if1)
		_, e2 := releaseKey(id2, if2)
		if (err != nil) != (e1 != nil || e2 != nil) {
			t.Fatalf("set %v err %v, but keys %v / %v", set, err, e1, e2)
		}
		if err == nil && (len(set) == 0 || len(set) > 2) {
			t.Fatalf("set %v", set)
		}
	})
}
