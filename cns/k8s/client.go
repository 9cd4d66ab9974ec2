package k8s

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Config selects the API server and this node.
type Config struct {
	// Kubeconfig is a kubeconfig path. Empty: the in-cluster config when cns runs in a pod
	// (KUBERNETES_SERVICE_HOST set), otherwise no API server at all.
	Kubeconfig string
	// NodeName is this node's name in the API server; see NodeName.
	NodeName string
	// Timeout bounds every call but the informer's watch (which the server ends itself).
	Timeout time.Duration
	// GCGrace is how long an allocation's pod must be absent (or carry another UID) before
	// the allocation is released.
	GCGrace time.Duration
}

// Enabled reports whether an API server is configured.
func (c Config) Enabled() bool {
	return c.Kubeconfig != "" || os.Getenv("KUBERNETES_SERVICE_HOST") != ""
}

// ResolveNodeName returns the node name: the flag, else $NODE_NAME (the DaemonSet sets it
// from spec.nodeName), else the host name as kubelet registers it (lower case).
func ResolveNodeName(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if n := os.Getenv("NODE_NAME"); n != "" {
		return n, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("node name: no --node-name, no NODE_NAME and no host name: %w", err)
	}
	return strings.ToLower(h), nil
}

// Client is the part of the Kubernetes API cns uses: reading pods. It is client-go's REST
// client on a scheme that knows core/v1 alone. Neither client-go's clientset (whose scheme
// registers every built-in API group at package init) nor its generic typed client (which
// links client-go's fake tracker, server-side apply and OpenAPI models) is linked: together
// they were about 8 MiB of cns's resident memory, pages of code and type data that a node
// daemon reading pods never runs (`make bench`'s cns memory step, README).
type Client struct {
	rest   rest.Interface
	params runtime.ParameterCodec
}

// coreScheme knows core/v1 and the meta types the API server answers with (lists, watch
// events, Status).
func coreScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = corev1.AddToScheme(s)
	return s
}

// NewClient builds the pod client from c: the kubeconfig, or the in-cluster config.
func NewClient(c Config) (*Client, error) {
	rc, err := RestConfig(c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	return NewClientFor(rc)
}

// NewClientFor builds the pod client for an API server configuration, with the defaults
// client-go's core/v1 client sets (path /api, group version v1).
func NewClientFor(rc *rest.Config) (*Client, error) {
	cfg := rest.CopyConfig(rc)
	cfg.UserAgent = "cns"
	// One watch and a few GETs per GC round: well inside the defaults, but a burst of
	// confirmations should not queue behind client-side throttling.
	cfg.QPS, cfg.Burst = 20, 40
	s := coreScheme()
	cfg.GroupVersion = &corev1.SchemeGroupVersion
	cfg.APIPath = "/api"
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(s).WithoutConversion()
	r, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("API server client: %w", err)
	}
	return &Client{rest: r, params: runtime.NewParameterCodec(s)}, nil
}

// ListPods lists pods in all namespaces, as the clientset's CoreV1().Pods("").List does
// (protobuf unless the configuration names a content type, as the clientset's pod client).
func (c *Client) ListPods(ctx context.Context, o metav1.ListOptions) (*corev1.PodList, error) {
	l := &corev1.PodList{}
	err := c.rest.Get().UseProtobufAsDefault().Resource("pods").VersionedParams(&o, c.params).Timeout(timeoutOf(o)).Do(ctx).Into(l)
	return l, err
}

// WatchPods watches pods in all namespaces, as the clientset's CoreV1().Pods("").Watch does.
func (c *Client) WatchPods(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	o.Watch = true
	return c.rest.Get().UseProtobufAsDefault().Resource("pods").VersionedParams(&o, c.params).Timeout(timeoutOf(o)).Watch(ctx)
}

// GetPod reads one pod.
func (c *Client) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	p := &corev1.Pod{}
	err := c.rest.Get().UseProtobufAsDefault().Namespace(namespace).Resource("pods").Name(name).Do(ctx).Into(p)
	return p, err
}

func timeoutOf(o metav1.ListOptions) time.Duration {
	if o.TimeoutSeconds == nil {
		return 0
	}
	return time.Duration(*o.TimeoutSeconds) * time.Second
}

// RestConfig is how cns reaches the API server, for pod demand and for cluster mode alike:
// the --kubeconfig file, else the in-cluster config inside a pod, else an error (a node
// daemon never guesses a kubeconfig from $HOME).
func RestConfig(kubeconfig string) (*rest.Config, error) {
	var (
		rc  *rest.Config
		err error
	)
	switch {
	case kubeconfig != "":
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	case os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		rc, err = rest.InClusterConfig()
	default:
		return nil, errors.New("no --kubeconfig and not running in a pod")
	}
	if err != nil {
		return nil, fmt.Errorf("API server config: %w", err)
	}
	return rc, nil
}
