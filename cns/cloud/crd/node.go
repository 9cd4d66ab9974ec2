package crd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/vnet-cni/vnet-cni/cns/api/v1alpha1"
	"github.com/vnet-cni/vnet-cni/cns/cloud"
)

// Node is one node's NIC seen through its NodeNetworkConfig. It implements cns.NICAPI; like
// every NICAPI it is called one call at a time.
type Node struct {
	c     *Client
	cache *Cache
	name  string
	inUse func() int
}

// SetInUse gives the node's count of addresses assigned to pods, reported in the spec beside
// each request (the Free column of kubectl get nodenetworkconfigs).
func (n *Node) SetInUse(f func() int) { n.inUse = f }

// New returns the NIC of node name; cache must watch that object.
func New(c *Client, cache *Cache, name string) *Node {
	return &Node{c: c, cache: cache, name: name}
}

// Ensure creates the node's NodeNetworkConfig, owned by its Node object so that it is
// deleted with the node, unless it exists.
func (n *Node) Ensure(ctx context.Context) error {
	if o, _ := n.cache.get(n.name); o != nil {
		return nil
	}
	node, err := n.c.GetNode(ctx, n.name)
	if err != nil {
		return fmt.Errorf("read Node %s (the owner of its NodeNetworkConfig): %w", n.name, err)
	}
	obj := &v1.NodeNetworkConfig{ObjectMeta: metav1.ObjectMeta{Name: n.name, OwnerReferences: []metav1.OwnerReference{{
		APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
	}}}}
	if _, err := n.c.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create NodeNetworkConfig %s: %w", n.name, err)
	}
	return nil
}

// GetNIC returns the NIC as the controller last reported it, waiting until it has reported
// it once.
func (n *Node) GetNIC(ctx context.Context) (cloud.NIC, error) {
	for {
		o, changed := n.cache.get(n.name)
		if o != nil && o.Status.NIC.ID != "" {
			return toNIC(o)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return cloud.NIC{}, n.waitErr(o, "the controller has not reported the NIC")
		}
	}
}

// UpdateIPConfigs asks for ch through the spec and waits until the controller has finished
// with that spec generation. Only the addresses of ch.Remove the NIC holds are listed for
// release; the requested count is what remains plus ch.Add.
func (n *Node) UpdateIPConfigs(ctx context.Context, ch cloud.Change) (cloud.NIC, error) {
	cur, _ := n.cache.get(n.name)
	if cur == nil {
		return cloud.NIC{}, &cloud.Error{Kind: cloud.KindUnavailable, Err: fmt.Errorf("NodeNetworkConfig %s does not exist", n.name)}
	}
	if ch.ETag != "" && cur.Status.NIC.ETag != ch.ETag {
		return cloud.NIC{}, &cloud.Error{Kind: cloud.KindConflict,
			Err: fmt.Errorf("NIC changed: etag %s, decided on %s", cur.Status.NIC.ETag, ch.ETag)}
	}
	nic, err := toNIC(cur)
	if err != nil {
		return cloud.NIC{}, err
	}
	var release []string
	for _, a := range ch.Remove {
		if _, ok := slices.BinarySearchFunc(nic.Secondaries, a, netip.Addr.Compare); ok {
			release = append(release, a.String())
		}
	}
	want := cur.DeepCopy()
	want.Spec.RequestedIPCount = int32(len(nic.Secondaries) - len(release) + ch.Add)
	want.Spec.IPsNotInUse = release
	if n.inUse != nil {
		want.Spec.InUseIPCount = int32(n.inUse())
	}
	got, err := n.patchSpec(ctx, cur, want)
	if err != nil {
		return cloud.NIC{}, &cloud.Error{Kind: cloud.KindUnavailable, Err: fmt.Errorf("patch NodeNetworkConfig %s spec: %w", n.name, err)}
	}
	n.cache.observe(got)
	gen := got.Generation
	for {
		o, changed := n.cache.get(n.name)
		if o != nil && o.Status.ObservedGeneration >= gen {
			return outcome(o)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return cloud.NIC{}, n.waitErr(o, fmt.Sprintf("the controller has not applied spec generation %d", gen))
		}
	}
}

// patchSpec sends the JSON merge patch from cur to want (only the fields that differ, no
// resourceVersion precondition) and returns the object as the API server stored it.
func (n *Node) patchSpec(ctx context.Context, cur, want *v1.NodeNetworkConfig) (*v1.NodeNetworkConfig, error) {
	from, err := json.Marshal(cur)
	if err != nil {
		return nil, err
	}
	to, err := json.Marshal(want)
	if err != nil {
		return nil, err
	}
	patch, err := jsonpatch.CreateMergePatch(from, to)
	if err != nil {
		return nil, err
	}
	return n.c.MergePatch(ctx, n.name, patch)
}

// outcome is the NIC of o and, when the controller gave up on the generation, its reason as
// a classified error.
func outcome(o *v1.NodeNetworkConfig) (cloud.NIC, error) {
	nic, err := toNIC(o)
	if err != nil {
		return nic, err
	}
	c := meta.FindStatusCondition(o.Status.Conditions, v1.ConditionReady)
	if c == nil || c.Status == metav1.ConditionTrue || c.ObservedGeneration < o.Status.ObservedGeneration {
		return nic, nil
	}
	return nic, &cloud.Error{Kind: KindOfReason(c.Reason), Code: c.Reason, Err: errors.New(c.Message)}
}

// waitErr explains a wait that ended before the controller answered, classified by what the
// status says the controller is waiting on.
func (n *Node) waitErr(o *v1.NodeNetworkConfig, what string) error {
	kind, msg := cloud.KindUnavailable, "no status yet; is the vnet-controller running?"
	if o != nil {
		if c := meta.FindStatusCondition(o.Status.Conditions, v1.ConditionThrottled); c != nil && c.Status == metav1.ConditionTrue {
			kind, msg = cloud.KindThrottled, c.Message
		} else if o.Status.LastError != "" {
			msg = o.Status.LastError
		}
	}
	return &cloud.Error{Kind: kind, Err: fmt.Errorf("NodeNetworkConfig %s: %s: %s", n.name, what, msg)}
}

// toNIC converts the status into the pool's view of the NIC.
func toNIC(o *v1.NodeNetworkConfig) (cloud.NIC, error) {
	s := o.Status
	nic := cloud.NIC{ID: s.NIC.ID, ETag: s.NIC.ETag, ProvisioningState: s.NIC.ProvisioningState}
	var errs []error
	var err error
	if nic.Primary, err = netip.ParseAddr(s.Primary); err != nil {
		errs = append(errs, fmt.Errorf("primary: %w", err))
	}
	if nic.Subnet, err = netip.ParsePrefix(s.Subnet); err != nil {
		errs = append(errs, fmt.Errorf("subnet: %w", err))
	}
	for _, ipc := range s.IPConfigurations {
		a, err := netip.ParseAddr(ipc.Address)
		if err != nil {
			errs = append(errs, fmt.Errorf("ip configuration %s: %w", ipc.Name, err))
			continue
		}
		nic.Secondaries = append(nic.Secondaries, a)
		if ipc.Name != "" {
			if nic.Names == nil {
				nic.Names = map[netip.Addr]string{}
			}
			nic.Names[a] = ipc.Name
		}
	}
	slices.SortFunc(nic.Secondaries, netip.Addr.Compare)
	for _, f := range s.ForeignIPConfigurations {
		fc := cloud.ForeignConfig{Name: f.Name}
		if f.Address != "" {
			fc.Addr, _ = netip.ParseAddr(f.Address) // the pool only counts foreign ones
		}
		nic.Foreign = append(nic.Foreign, fc)
	}
	if len(errs) > 0 {
		return cloud.NIC{}, &cloud.Error{Kind: cloud.KindRejected, Err: fmt.Errorf("NodeNetworkConfig %s status: %w", o.Name, errors.Join(errs...))}
	}
	return nic, nil
}

// KindOfReason maps a Ready condition reason back to the cloud failure kind it names.
func KindOfReason(reason string) cloud.Kind {
	for k := cloud.KindUnavailable; k <= cloud.KindRejected; k++ {
		if Reason(k) == reason {
			return k
		}
	}
	return cloud.KindFailed
}

// Reason is the condition reason naming a cloud failure kind, e.g. SubnetFull.
func Reason(k cloud.Kind) string {
	return [...]string{"Unavailable", "Throttled", "Conflict", "Busy", "SubnetFull", "NICFull", "Failed", "Rejected"}[k]
}
