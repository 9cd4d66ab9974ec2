package plugin_test

import (
	"context"
	"testing"

	"github.com/vnet-cni/vnet-cni/plugin"
	"github.com/vnet-cni/vnet-cni/test/stack"
)

// BenchmarkDialAndStatus is what every plugin process pays to reach cns once: open a client
// on the unix socket, make one call (Status: no disk, no cloud) and close.
func BenchmarkDialAndStatus(b *testing.B) {
	s := stack.Start(b, stack.Options{})
	conf := &plugin.Config{CNSSocket: s.Socket}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		c, err := plugin.DialCNS(conf)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Status(ctx); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
