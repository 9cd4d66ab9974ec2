package mockarm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NetnsFabric programs the emulated VNet in a network namespace: a /32 route per ip
// configuration, via the primary address of the NIC's node (which the namespace reaches
// over that node's link).
type NetnsFabric struct {
	NS ns.NetNS
}

var _ Fabric = (*NetnsFabric)(nil)

// Program adds and removes routes inside the fabric namespace.
func (f *NetnsFabric) Program(add map[netip.Addr]netip.Addr, remove []netip.Addr) error {
	return f.NS.Do(func(ns.NetNS) error {
		var errs []error
		for a, node := range add {
			r := &netlink.Route{Dst: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}, Gw: node.AsSlice()}
			if err := netlink.RouteReplace(r); err != nil {
				errs = append(errs, fmt.Errorf("route %s via %s: %w", a, node, err))
			}
		}
		for _, a := range remove {
			r := &netlink.Route{Dst: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}}
			if err := netlink.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete route %s: %w", a, err))
			}
		}
		return errors.Join(errs...)
	})
}

// ListenInNS opens a TCP listener inside n, e.g. on the VNet gateway address. The socket
// has SO_REUSEPORT, as a restartable front end's has: a mockarm restarted on the same
// address binds again at once, whatever its predecessor's closed connections still hold
// (the server side of every connection it closed lingers in TIME_WAIT for a minute).
func ListenInNS(n ns.NetNS, addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) }); err != nil {
			return err
		}
		return serr
	}}
	var l net.Listener
	err := n.Do(func(ns.NetNS) (err error) {
		l, err = lc.Listen(context.Background(), "tcp4", addr)
		return err
	})
	return l, err
}
