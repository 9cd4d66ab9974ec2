package crd

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	v1 "github.com/vnet-cni/vnet-cni/cns/api/v1alpha1"
)

// Scheme knows core/v1 (Nodes, the owners of NodeNetworkConfigs), coordination/v1 (the
// controller's Lease) and NodeNetworkConfig. It deliberately does not include client-go's
// scheme of every built-in group: cns links this package, and that scheme's registration at
// package init costs a node daemon megabytes of resident memory for types it never reads.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = corev1.AddToScheme(s)
	_ = coordv1.AddToScheme(s)
	_ = v1.AddToScheme(s)
	return s
}

// Client is what a node needs of the API server for its NodeNetworkConfig (cluster-scoped)
// and its Node: client-go's REST clients, called as client-go's typed clients call them.
// The generic typed client (client-go/gentype) is not used: it links client-go's fake object
// tracker, server-side apply and OpenAPI models, megabytes of cns's resident memory.
type Client struct {
	core, group rest.Interface // core/v1 and NodeNetworkConfig's group version
	params      runtime.ParameterCodec
}

// NewClient builds the REST clients over one HTTP client (one connection pool).
func NewClient(rc *rest.Config) (*Client, error) {
	s := Scheme()
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	restFor := func(gv schema.GroupVersion, path string) (rest.Interface, error) {
		cfg := rest.CopyConfig(rc)
		cfg.GroupVersion, cfg.APIPath = &gv, path
		cfg.NegotiatedSerializer = serializer.NewCodecFactory(s).WithoutConversion()
		if gv == v1.GroupVersion { // custom resources are served as JSON only, whatever rc asks
			cfg.ContentType, cfg.AcceptContentTypes = "application/json", "application/json"
		}
		if cfg.UserAgent == "" {
			cfg.UserAgent = rest.DefaultKubernetesUserAgent()
		}
		r, err := rest.RESTClientForConfigAndClient(cfg, hc)
		if err != nil {
			return nil, fmt.Errorf("kubernetes client for %s: %w", gv, err)
		}
		return r, nil
	}
	c := &Client{params: runtime.NewParameterCodec(s)}
	if c.core, err = restFor(corev1.SchemeGroupVersion, "/api"); err != nil {
		return nil, err
	}
	if c.group, err = restFor(v1.GroupVersion, "/apis"); err != nil {
		return nil, err
	}
	return c, nil
}

const resource = "nodenetworkconfigs"

// GetNode reads the Node name.
func (c *Client) GetNode(ctx context.Context, name string) (*corev1.Node, error) {
	n := &corev1.Node{}
	return n, c.core.Get().UseProtobufAsDefault().Resource("nodes").Name(name).Do(ctx).Into(n)
}

// Create creates o and returns it as stored.
func (c *Client) Create(ctx context.Context, o *v1.NodeNetworkConfig) (*v1.NodeNetworkConfig, error) {
	got := &v1.NodeNetworkConfig{}
	return got, c.group.Post().Resource(resource).Body(o).Do(ctx).Into(got)
}

// MergePatch applies a JSON merge patch to the object name and returns it as stored.
func (c *Client) MergePatch(ctx context.Context, name string, patch []byte) (*v1.NodeNetworkConfig, error) {
	got := &v1.NodeNetworkConfig{}
	return got, c.group.Patch(types.MergePatchType).Resource(resource).Name(name).Body(patch).Do(ctx).Into(got)
}

// List lists NodeNetworkConfigs.
func (c *Client) List(ctx context.Context, o metav1.ListOptions) (*v1.NodeNetworkConfigList, error) {
	l := &v1.NodeNetworkConfigList{}
	return l, c.group.Get().Resource(resource).VersionedParams(&o, c.params).Timeout(timeoutOf(o)).Do(ctx).Into(l)
}

// Watch watches NodeNetworkConfigs.
func (c *Client) Watch(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	o.Watch = true
	return c.group.Get().Resource(resource).VersionedParams(&o, c.params).Timeout(timeoutOf(o)).Watch(ctx)
}

func timeoutOf(o metav1.ListOptions) time.Duration {
	if o.TimeoutSeconds == nil {
		return 0
	}
	return time.Duration(*o.TimeoutSeconds) * time.Second
}

// discoveryTimeout bounds Served's one request, as client-go's discovery client bounds its own.
const discoveryTimeout = 32 * time.Second

// served reports whether the API server lists nodenetworkconfigs in the group version's
// resources (the CRD is installed and established).
func (c *Client) served(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, discoveryTimeout)
	defer cancel()
	raw, err := c.group.Get().AbsPath("/apis", v1.GroupVersion.Group, v1.GroupVersion.Version).Do(ctx).Raw()
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover %s: %w", v1.GroupVersion, err)
	}
	var rl metav1.APIResourceList
	if err := json.Unmarshal(raw, &rl); err != nil {
		return false, fmt.Errorf("discover %s: %w", v1.GroupVersion, err)
	}
	for _, r := range rl.APIResources {
		if r.Name == "nodenetworkconfigs" {
			return true, nil
		}
	}
	return false, nil
}
