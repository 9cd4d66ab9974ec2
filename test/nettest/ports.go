package nettest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreeLoopbackAddr returns a 127.0.0.1 address, for a process the test starts to listen on,
// whose port was free a moment ago; see FreeLoopbackPorts.
func FreeLoopbackAddr(t testing.TB) string {
	t.Helper()
	ports, err := FreeLoopbackPorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
}

// FreeLoopbackPorts returns n distinct loopback ports that were free a moment ago, chosen
// outside the kernel's ephemeral range. A port found by listening on port 0 lies inside it,
// and once that listener closes the kernel may give the port to any connection as its source
// port (the process told to listen there, dialling first, takes it itself), so the listen
// fails with "address already in use". Outside the range only another explicit bind can take
// it, and the port is drawn at random from thousands.
func FreeLoopbackPorts(n int) ([]int, error) {
	lo, hi := freeRange()
	var ports []int
	for tries := 0; len(ports) < n && tries < 100*n; tries++ {
		p := lo + rand.IntN(hi-lo+1)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // taken, or drawn twice and still held below
		}
		defer l.Close() // held until all n are chosen, so they are distinct
		ports = append(ports, p)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("no %d free loopback ports in %d-%d", n, lo, hi)
	}
	return ports, nil
}

// freeRange is the wider of the port ranges below and above the ephemeral range, leaving out
// the ports under 10000 that services are usually configured on.
func freeRange() (lo, hi int) {
	first, last := 32768, 60999 // Linux's default ip_local_port_range
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			a, errA := strconv.Atoi(f[0])
			z, errZ := strconv.Atoi(f[1])
			if errA == nil && errZ == nil && a <= z {
				first, last = a, z
			}
		}
	}
	const floor, top = 10000, 65535
	below, above := first-1-floor, top-(last+1)
	if below >= above && below > 0 {
		return floor, first - 1
	}
	if above > 0 {
		return last + 1, top
	}
	return floor, top // the whole range is ephemeral: nothing better than a random draw
}
