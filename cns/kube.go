package cns

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/vnet-cni/vnet-cni/cns/k8s"
)

// startKube watches the pods bound to this node when an API server is configured: they
// become demand for the pool, and allocations of pods gone from the API server are released
// after the grace period. The returned stop waits for both to end.
func startKube(ctx context.Context, c k8s.Config, m *Manager, log *slog.Logger) (stop func(), err error) {
	if !c.Enabled() {
		return func() {}, nil
	}
	node, err := k8s.ResolveNodeName(c.NodeName)
	if err != nil {
		return nil, err
	}
	client, err := k8s.NewClient(c)
	if err != nil {
		return nil, err
	}
	pods := k8s.NewPods(client, node, c.Timeout, log)
	pods.OnChange(m.poke)
	m.UsePods(pods)
	kctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { pods.Run(kctx) })
	wg.Go(func() { newAPIGC(m, pods, c.GCGrace).run(kctx) })
	log.Info("watching the pods bound to this node", "node", node, "gcGrace", c.GCGrace)
	return func() { cancel(); wg.Wait() }, nil
}

func validateKube(c k8s.Config) error {
	if c.Timeout <= 0 || c.GCGrace <= 0 {
		return fmt.Errorf("--api-timeout and --pod-gc-grace must be positive")
	}
	return nil
}
