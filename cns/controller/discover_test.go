package controller

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1 "github.com/vnet-cni/vnet-cni/cns/api/v1alpha1"
	"github.com/vnet-cni/vnet-cni/cns/cloud"
)

// What the Node says decides whether a failure to find its NIC is retried or final.
func TestDiscoveryFailuresAreRetriedOnlyWhenTimeMayMendThem(t *testing.T) {
	node := func(name, pid string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{ProviderID: pid}}
	}
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(node("bare", ""), node("aws", "aws:///us-east-1a/i-1"),
		node("elsewhere", "azure:///subscriptions/s2/resourceGroups/other/providers/Microsoft.Compute/virtualMachines/elsewhere")).Build()
	d := &Discoverer{Nodes: c, AllowedGroups: []string{"s1/nodes"}}
	for _, tc := range []struct {
		node   string
		kind   cloud.Kind
		reason string
	}{
		{"bare", cloud.KindUnavailable, v1.ReasonProviderIDNotSet},
		{"missing", cloud.KindUnavailable, v1.ReasonPending},
		{"aws", cloud.KindRejected, v1.ReasonNICNotFound},
		{"elsewhere", cloud.KindRejected, v1.ReasonNICNotFound},
	} {
		_, err := d.NIC(t.Context(), tc.node)
		var ce *cloud.Error
		if !errors.As(discoveryError(err), &ce) || ce.Kind != tc.kind || ce.Code != tc.reason {
			t.Errorf("node %s: %v; want %s/%s", tc.node, err, tc.kind, tc.reason)
		}
	}
}
