package crd

import (
	"net/netip"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/vnet-cni/vnet-cni/cns/api/v1alpha1"
	"github.com/vnet-cni/vnet-cni/cns/cloud"
)

func status(gen int64, ready metav1.ConditionStatus, reason string) *v1.NodeNetworkConfig {
	o := &v1.NodeNetworkConfig{}
	o.Name, o.Generation = "n1", gen
	o.Status = v1.NodeNetworkConfigStatus{ObservedGeneration: gen, NIC: v1.NIC{ID: "/nic", ETag: "e1", ProvisioningState: "Succeeded"},
		Subnet: "10.240.0.0/16", Primary: "10.240.0.4",
		IPConfigurations: []v1.IPConfiguration{{Address: "10.240.0.9"}, {Address: "10.240.0.5"}},
		Conditions:       []metav1.Condition{{Type: v1.ConditionReady, Status: ready, Reason: reason, Message: "m", ObservedGeneration: gen}}}
	return o
}

func TestStatusBecomesTheNICView(t *testing.T) {
	nic, err := outcome(status(3, metav1.ConditionTrue, v1.ReasonApplied))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("10.240.0.5"), netip.MustParseAddr("10.240.0.9")}
	if !slices.Equal(nic.Secondaries, want) || nic.Primary != netip.MustParseAddr("10.240.0.4") || nic.ETag != "e1" ||
		nic.Subnet != netip.MustParsePrefix("10.240.0.0/16") {
		t.Fatalf("NIC view %+v does not match the status", nic)
	}
}

func TestAGivenUpGenerationIsTheCloudErrorItNames(t *testing.T) {
	for _, k := range []cloud.Kind{cloud.KindSubnetFull, cloud.KindNICFull, cloud.KindRejected, cloud.KindFailed} {
		_, err := outcome(status(3, metav1.ConditionFalse, Reason(k)))
		if cloud.KindOf(err) != k {
			t.Errorf("Ready=False reason %s: error kind %v, want %v", Reason(k), cloud.KindOf(err), k)
		}
	}
}

func TestABrokenStatusIsRejectedNotServed(t *testing.T) {
	o := status(1, metav1.ConditionTrue, v1.ReasonApplied)
	o.Status.IPConfigurations = append(o.Status.IPConfigurations, v1.IPConfiguration{Address: "not-an-ip"})
	if _, err := outcome(o); cloud.KindOf(err) != cloud.KindRejected {
		t.Fatalf("status with a bad address: %v, want a rejected error", err)
	}
}
