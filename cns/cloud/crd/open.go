package crd

import (
	"context"
	"fmt"
	"log/slog"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/vnet-cni/vnet-cni/cns/api/v1alpha1"
)

// Scheme knows the core types and NodeNetworkConfig.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = v1.AddToScheme(s)
	return s
}

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
func Served(rc *rest.Config) (bool, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return false, err
	}
	rl, err := dc.ServerResourcesForGroupVersion(v1.GroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover %s: %w", v1.GroupVersion, err)
	}
	for _, r := range rl.APIResources {
		if r.Name == "nodenetworkconfigs" {
			return true, nil
		}
	}
	return false, nil
}

// Open connects node's cns to its NodeNetworkConfig: a client, an informer on that one object
// (running until ctx ends), and the object itself, created if it does not exist yet.
func Open(ctx context.Context, rc *rest.Config, node string, log *slog.Logger) (*Node, error) {
	c, err := client.NewWithWatch(rc, client.Options{Scheme: Scheme()})
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	cache, err := NewCache(ctx, c, node, log)
	if err != nil {
		return nil, err
	}
	if err := cache.WaitSynced(ctx); err != nil {
		return nil, err
	}
	n := New(c, cache, node)
	if err := n.Ensure(ctx); err != nil {
		return nil, err
	}
	return n, nil
}
