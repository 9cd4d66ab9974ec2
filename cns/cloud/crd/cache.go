package crd

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"

	v1 "github.com/vnet-cni/vnet-cni/cns/api/v1alpha1"
)

// Cache holds the NodeNetworkConfigs one informer watches and wakes whoever waits on a change.
// A node's cns watches only its own object (a field selector on metadata.name); a process that
// simulates many nodes shares one Cache over all of them.
type Cache struct {
	informer toolscache.SharedIndexInformer

	mu      sync.Mutex
	objs    map[string]*v1.NodeNetworkConfig
	changed map[string]chan struct{} // closed and replaced when the named object changes
}

// NewCache starts an informer over the NodeNetworkConfigs named name (all of them if name is
// empty); it runs until ctx ends. WaitSynced blocks until its first list has arrived.
func NewCache(ctx context.Context, c *Client, name string, log *slog.Logger) (*Cache, error) {
	var sel fields.Selector = fields.Everything()
	if name != "" {
		sel = fields.OneTermEqualSelector("metadata.name", name)
	}
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel.String()
			return c.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel.String()
			return c.Watch(ctx, o)
		},
	}
	inf := toolscache.NewSharedIndexInformerWithOptions(lw, &v1.NodeNetworkConfig{}, toolscache.SharedIndexInformerOptions{})
	k := &Cache{informer: inf, objs: map[string]*v1.NodeNetworkConfig{}, changed: map[string]chan struct{}{}}
	set := func(o any) {
		if n, ok := o.(*v1.NodeNetworkConfig); ok {
			k.put(n.Name, n)
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, o any) { set(o) },
		DeleteFunc: func(o any) {
			if t, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if n, ok := o.(*v1.NodeNetworkConfig); ok {
				k.put(n.Name, nil)
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("nodenetworkconfig informer: %w", err)
	}
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *toolscache.Reflector, err error) {
		log.Warn("nodenetworkconfig watch failed; the informer relists", "err", err)
	})
	go inf.RunWithContext(ctx)
	return k, nil
}

// WaitSynced blocks until the informer's first list is in the cache.
func (k *Cache) WaitSynced(ctx context.Context) error {
	if !toolscache.WaitForCacheSync(ctx.Done(), k.informer.HasSynced) {
		return fmt.Errorf("nodenetworkconfig informer did not sync: %w", context.Cause(ctx))
	}
	return nil
}

func (k *Cache) put(name string, n *v1.NodeNetworkConfig) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.putLocked(name, n)
}

func (k *Cache) putLocked(name string, n *v1.NodeNetworkConfig) {
	if n == nil {
		delete(k.objs, name)
	} else {
		k.objs[name] = n
	}
	if ch, ok := k.changed[name]; ok {
		close(ch)
		delete(k.changed, name)
	}
}

// get returns the named object (nil if absent; never modify it) and a channel closed at its
// next change.
func (k *Cache) get(name string) (*v1.NodeNetworkConfig, <-chan struct{}) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ch, ok := k.changed[name]
	if !ok {
		ch = make(chan struct{})
		k.changed[name] = ch
	}
	return k.objs[name], ch
}

// observe keeps an object returned by a write if it is newer than what the informer has
// delivered, so a caller never sees its own write go backwards.
func (k *Cache) observe(n *v1.NodeNetworkConfig) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if cur := k.objs[n.Name]; cur == nil || cur.Generation < n.Generation {
		k.putLocked(n.Name, n)
	}
}
