package crd

import (
	"context"
	"fmt"
	"log/slog"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RestConfig loads the API server address and credentials: kubeconfig if given, else
// in-cluster, else $KUBECONFIG.
func RestConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		if c, err := rest.InClusterConfig(); err == nil {
			return c, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
}

// Served reports whether the API server serves NodeNetworkConfig (the CRD is installed):
// what --ipam-source auto decides on.
func Served(ctx context.Context, rc *rest.Config) (bool, error) {
	c, err := NewClient(rc)
	if err != nil {
		return false, err
	}
	return c.served(ctx)
}

// Open connects node's cns to its NodeNetworkConfig: a client, an informer on that one object
// (running until ctx ends), and the object itself, created if it does not exist yet. ready
// bounds the wait for the informer's first list and the creation (a missing CRD, missing
// RBAC or an unreachable API server end in an error, not a hang); on an error the informer
// is stopped.
func Open(ctx, ready context.Context, rc *rest.Config, node string, log *slog.Logger) (_ *Node, err error) {
	c, err := NewClient(rc)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(ctx)
	defer func() {
		if err != nil {
			stop()
		}
	}()
	cache, err := NewCache(ctx, c, node, log)
	if err != nil {
		return nil, err
	}
	if err := cache.WaitSynced(ready); err != nil {
		return nil, fmt.Errorf("NodeNetworkConfig %s: the informer's first list: %w", node, err)
	}
	n := New(c, cache, node)
	if err := n.Ensure(ready); err != nil {
		return nil, err
	}
	return n, nil
}
