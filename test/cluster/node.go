package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/vnet-cni/vnet-cni/cns"
	"github.com/vnet-cni/vnet-cni/cns/cloud/azure"
	"github.com/vnet-cni/vnet-cni/cns/cloud/crd"
	"github.com/vnet-cni/vnet-cni/cns/store"
	"github.com/vnet-cni/vnet-cni/ipampool"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
)

// Node is a simulated node: cns's pool manager over a real store, without gRPC or datapath.
type Node struct {
	Name string
	M    *cns.Manager
	st   *store.Store
	stop context.CancelFunc
	done chan struct{}
}

// PoolConfig is cns's production pool configuration with test-friendly timings.
func PoolConfig() cns.ManagerConfig {
	c := cns.DefaultConfig().Pool
	c.ReleaseSpool = ""
	c.RequestWait = 60 * time.Second
	c.CloudTimeout = 120 * time.Second
	c.BackoffMin, c.BackoffMax = 200*time.Millisecond, 5*time.Second
	return c
}

// StartNode runs a pool manager for name over nic, its state under dir.
func StartNode(name string, nic cns.NICAPI, cfg cns.ManagerConfig, dir string, log *slog.Logger) (*Node, error) {
	st, _, err := store.Open(filepath.Join(dir, name+".db"), log)
	if err != nil {
		return nil, err
	}
	m, err := cns.NewManager(cfg, nic, st, log.With("node", name))
	if err == nil {
		err = m.Restore()
	}
	if err != nil {
		st.Close()
		return nil, err
	}
	if c, ok := nic.(*crd.Node); ok {
		c.SetInUse(func() int { return int(m.Snapshot().GetCounts().GetAssigned()) })
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{Name: name, M: m, st: st, stop: cancel, done: make(chan struct{})}
	go func() { defer close(n.done); m.Run(ctx) }()
	return n, nil
}

// Stop ends the manager and closes its store.
func (n *Node) Stop() {
	n.stop()
	<-n.done
	n.st.Close()
}

// Pool is the node's pool as PoolService reports it.
func (n *Node) Pool() *cnsv1.GetPoolResponse { return n.M.Snapshot() }

// Request assigns an address to pod i of the node.
func (n *Node) Request(ctx context.Context, i int) (cns.Grant, error) {
	id := fmt.Sprintf("%s-pod-%d", n.Name, i)
	return n.M.RequestIP(ctx, ipampool.Owner{Key: ipampool.Key{ContainerID: id, IfName: "eth0"}, PodNamespace: "default", PodName: id})
}

// CRDNIC is the cluster-mode cloud of a simulated node: its NodeNetworkConfig, created owned
// by its Node, seen through cache.
func CRDNIC(ctx context.Context, c *crd.Client, cache *crd.Cache, name string) (cns.NICAPI, error) {
	n := crd.New(c, cache, name)
	return n, n.Ensure(ctx)
}

// DirectNIC is the direct-mode cloud of a simulated node: its own ARM client on m.
func DirectNIC(m *Mock, name string) (cns.NICAPI, error) {
	return azure.New(m.AzureConfig(name))
}
