package k8s

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// Pod is a pod bound to this node that uses the pod network (not hostNetwork) and has not
// terminated.
type Pod struct {
	Namespace, Name, UID string
	// MirrorOf is, for the mirror of a static pod, the UID kubelet runs it under (and passes
	// as K8S_POD_UID): the mirror's own UID differs.
	MirrorOf string
}

// mirrorAnnotation holds a static pod's kubelet UID on its mirror pod.
const mirrorAnnotation = "kubernetes.io/config.mirror"

// Is reports whether the pod is the one a runtime named with uid (empty uid: any).
func (p Pod) Is(uid string) bool { return uid == "" || uid == p.UID || uid == p.MirrorOf }

func podOf(pod *corev1.Pod) Pod {
	return Pod{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID), MirrorOf: pod.Annotations[mirrorAnnotation]}
}

// Pods watches the pods bound to one node.
type Pods struct {
	client   *Client
	node     string
	timeout  time.Duration
	log      *slog.Logger
	informer cache.SharedIndexInformer

	mu       sync.Mutex
	changed  time.Time // last add/update/delete seen
	onChange []func()
}

// NewPods builds the watcher; call Run.
func NewPods(client *Client, node string, timeout time.Duration, log *slog.Logger) *Pods {
	p := &Pods{client: client, node: node, timeout: timeout, log: log}
	sel := fields.OneTermEqualSelector("spec.nodeName", node).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			o.FieldSelector = sel
			return client.ListPods(ctx, o)
		},
		// The watch is long-lived by design; the reflector asks the server to end it after
		// 5-10 minutes (TimeoutSeconds) and starts another.
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return client.WatchPods(ctx, o)
		},
	}
	p.informer = cache.NewSharedIndexInformerWithOptions(lw, &corev1.Pod{}, cache.SharedIndexInformerOptions{})
	// Keep only what cns reads: 200 full pod objects are megabytes, these are kilobytes.
	_ = p.informer.SetTransform(slim)
	_ = p.informer.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		log.Warn("pod watch failed; the informer re-lists (no garbage collection without a confirming GET)", "node", node, "err", err)
	})
	_, _ = p.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { p.touch() },
		UpdateFunc: func(any, any) { p.touch() },
		DeleteFunc: func(any) { p.touch() },
	})
	return p
}

// slim drops every field cns does not read.
func slim(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a DeletedFinalStateUnknown tombstone
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
			ResourceVersion: pod.ResourceVersion, DeletionTimestamp: pod.DeletionTimestamp, Annotations: mirror(pod)},
		Spec:   corev1.PodSpec{NodeName: pod.Spec.NodeName, HostNetwork: pod.Spec.HostNetwork},
		Status: corev1.PodStatus{Phase: pod.Status.Phase},
	}, nil
}

func mirror(pod *corev1.Pod) map[string]string {
	if v, ok := pod.Annotations[mirrorAnnotation]; ok {
		return map[string]string{mirrorAnnotation: v}
	}
	return nil
}

// OnChange registers f to run (without blocking) after every pod event.
func (p *Pods) OnChange(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onChange = append(p.onChange, f)
}

func (p *Pods) touch() {
	p.mu.Lock()
	p.changed = time.Now()
	fs := p.onChange
	p.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// Run runs the informer until ctx ends.
func (p *Pods) Run(ctx context.Context) { p.informer.RunWithContext(ctx) }

// Synced reports whether the informer has listed the node's pods at least once.
func (p *Pods) Synced() bool { return p.informer.HasSynced() }

// Snapshot returns the node's pod-network pods that have not terminated, when the set last
// changed, and whether the informer has synced (if not, the list means nothing).
func (p *Pods) Snapshot() (pods []Pod, changed time.Time, synced bool) {
	for _, obj := range p.informer.GetStore().List() {
		pod := obj.(*corev1.Pod)
		if pod.Spec.HostNetwork || pod.DeletionTimestamp != nil ||
			pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		pods = append(pods, podOf(pod))
	}
	p.mu.Lock()
	changed = p.changed
	p.mu.Unlock()
	return pods, changed, p.Synced()
}

// Cached returns namespace/name from the informer's cache.
func (p *Pods) Cached(namespace, name string) (Pod, bool) {
	obj, ok, err := p.informer.GetStore().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return Pod{}, false
	}
	return podOf(obj.(*corev1.Pod)), true
}

// Live reads namespace/name from the API server (a quorum read, not the cache). found=false
// with a nil error means the API server says the pod does not exist.
func (p *Pods) Live(ctx context.Context, namespace, name string) (pod Pod, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	obj, err := p.client.GetPod(ctx, namespace, name)
	if apierrors.IsNotFound(err) {
		return Pod{}, false, nil
	}
	if err != nil {
		return Pod{}, false, fmt.Errorf("get pod %s/%s: %w", namespace, name, err)
	}
	return podOf(obj), true, nil
}
