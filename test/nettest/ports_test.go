package nettest

import (
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// A port a test hands to a process to listen on lies outside the kernel's ephemeral range, so
// no connection is given it as its source port before the process binds it (CI once failed so:
// cns, told to listen on a port found by listening on port 0, first dialled mockarm from it).
func TestFreeLoopbackPortsLieOutsideTheEphemeralRange(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	first, _ := strconv.Atoi(f[0])
	last, _ := strconv.Atoi(f[1])
	ports, err := FreeLoopbackPorts(20)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range ports {
		if p >= first && p <= last {
			t.Fatalf("port %d lies in the ephemeral range %d-%d", p, first, last)
		}
		if slices.Contains(ports[:i], p) {
			t.Fatalf("port %d returned twice: %v", p, ports)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d was returned free but cannot be bound: %v", p, err)
		}
		l.Close()
	}
}
