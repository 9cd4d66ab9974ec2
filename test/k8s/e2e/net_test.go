//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"

	"github.com/vnet-cni/vnet-cni/test/mockarm"
)

// echoServer answers HTTP on addr inside netns n with "name source-address", like the
// agent: a node's or an internet host's own server. It stops with the test.
func echoServer(t *testing.T, n ns.NetNS, addr, name string) string {
	t.Helper()
	l, err := mockarm.ListenInNS(n, addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "%s %s\n", name, ip)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// getFromNS fetches url with a client whose connections start in netns n.
func getFromNS(ctx context.Context, n ns.NetNS, url string) (string, error) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = n.Do(func(ns.NetNS) error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// podsOn splits pods by node.
func podsOn(pods []corev1.Pod, node string) []corev1.Pod {
	var out []corev1.Pod
	for _, p := range pods {
		if p.Spec.NodeName == node {
			out = append(out, p)
		}
	}
	return out
}

// Pod to pod across nodes, node to pod, pod to node: the receiver always sees the sender's
// own address (no NAT inside the VNet).
func testConnectivity(t *testing.T, ctx context.Context, w *world) {
	c := w.c
	n1, n2 := c.VNet.Nodes[0], c.VNet.Nodes[1]
	a, b := podsOn(w.pods, n1.Name)[0], podsOn(w.pods, n2.Name)[0]
	host, src, err := get(ctx, c, appNS, a.Name, "http://"+b.Status.PodIP+":8080/")
	if err != nil {
		t.Fatalf("pod %s → pod %s: %v", a.Name, b.Name, err)
	}
	if host != b.Name || src != a.Status.PodIP {
		t.Errorf("pod %s → pod %s (%s): answered by %s, seen from %s; want %s from %s", a.Name, b.Name, b.Status.PodIP, host, src, b.Name, a.Status.PodIP)
	}
	body, err := getFromNS(ctx, n1.NS, "http://"+b.Status.PodIP+":8080/")
	if err != nil {
		t.Fatalf("node %s → pod %s: %v", n1.Name, b.Name, err)
	}
	if want := fmt.Sprintf("%s %s\n", b.Name, n1.Primary); body != want {
		t.Errorf("node %s → pod %s: %q, want %q", n1.Name, b.Name, body, want)
	}
	addr := echoServer(t, n2.NS, net.JoinHostPort(n2.Primary.String(), "0"), n2.Name)
	for _, p := range []corev1.Pod{a, b} {
		host, src, err := get(ctx, c, appNS, p.Name, "http://"+addr+"/")
		if err != nil {
			t.Fatalf("pod %s → node %s: %v", p.Name, n2.Name, err)
		}
		if host != n2.Name || src != p.Status.PodIP {
			t.Errorf("pod %s → node %s: answered by %s, seen from %s; want %s", p.Name, n2.Name, host, src, p.Status.PodIP)
		}
	}
	if _, err := netip.ParseAddr(a.Status.PodIP); err != nil {
		t.Fatal(err)
	}
}
