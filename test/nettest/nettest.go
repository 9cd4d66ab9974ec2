// Package nettest holds helpers for tests on real kernel objects: throwaway network
// namespaces, and ICMP/TCP probes whose sockets are opened inside a given namespace.
package nettest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// RequireRoot skips a test that needs root and namespaces, except under CI=true, where it
// fails: CI runs as root and a skipped datapath test would hide a broken datapath.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root and network namespaces, and CI=true: failing rather than skipping")
	}
	t.Skip("needs root and network namespaces")
}

// NewNS makes a uniquely named network namespace, removed when the test ends (also on
// failure).
func NewNS(t testing.TB) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		if err := testutils.UnmountNS(n); err != nil {
			t.Errorf("remove network namespace %s: %v", n.Path(), err)
		}
	})
	return n
}

// Ping sends one ICMP echo from inside n to dst and waits for the reply.
func Ping(n ns.NetNS, dst netip.Addr, timeout time.Duration) error {
	var c *icmp.PacketConn
	if err := n.Do(func(ns.NetNS) (err error) {
		c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return fmt.Errorf("open ICMP socket in %s: %w", n.Path(), err)
	}
	defer c.Close()
	id := os.Getpid() & 0xffff
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: 1, Data: []byte("vnet-cni")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return fmt.Errorf("ping %s from %s: %w", dst, n.Path(), err)
	}
	buf := make([]byte, 1500)
	for {
		k, peer, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("ping %s from %s: no reply: %w", dst, n.Path(), err)
		}
		m, err := icmp.ParseMessage(1, buf[:k])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply || peer.String() != dst.String() {
			continue
		}
		return nil
	}
}

// Listen opens a TCP listener inside n.
func Listen(n ns.NetNS, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func(ns.NetNS) (err error) {
		l, err = net.Listen("tcp4", addr)
		return err
	})
	return l, err
}

// Dial opens a TCP connection from inside n.
func Dial(n ns.NetNS, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func(ns.NetNS) (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp4", addr)
		return err
	})
	return c, err
}

// EchoSource serves one connection on l: it writes back the remote address it saw, so a
// client can check that no NAT rewrote its source.
func EchoSource(l net.Listener) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(c.RemoteAddr().(*net.TCPAddr).IP.String() + "\n"))
			c.Close()
		}
	}()
}

// SeenSource dials addr from n and returns the source address the server reported.
func SeenSource(n ns.NetNS, addr string, timeout time.Duration) (string, error) {
	c, err := Dial(n, addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	buf := make([]byte, 64)
	k, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	s := string(buf[:k])
	if len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	return s, nil
}
