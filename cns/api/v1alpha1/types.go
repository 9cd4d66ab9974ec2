package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of NodeNetworkConfig.
var GroupVersion = schema.GroupVersion{Group: "vnet.cni.dev", Version: "v1alpha1"}

// AddToScheme registers the types of this package.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &NodeNetworkConfig{}, &NodeNetworkConfigList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// Condition types on the status.
const (
	// ConditionReady is True when the cloud holds what the current spec generation asks for.
	ConditionReady = "Ready"
	// ConditionSubnetFull is True when the last write could not add addresses: the subnet is full.
	ConditionSubnetFull = "SubnetFull"
	// ConditionThrottled is True while the controller waits on ARM's write budget for this node.
	ConditionThrottled = "Throttled"
)

// Reasons of the conditions. A reason is the classified cloud failure (cloud.Kind) or one of these.
const (
	ReasonApplied     = "Applied"     // the spec generation is applied
	ReasonPending     = "Pending"     // a write for the spec generation is queued or in flight
	ReasonNICNotFound = "NICNotFound" // the controller cannot find the node's NIC
	// ReasonNICClaimed: the node's provider ID leads to a NIC another node already has (or
	// to a VM whose computer name is not the node's); the controller never writes it.
	ReasonNICClaimed = "NICClaimed"
	// ReasonProviderIDNotSet: the Node has no spec.providerID yet (the cloud controller
	// manager sets it); retried, not an answer.
	ReasonProviderIDNotSet = "ProviderIDNotSet"
)

// NodeNetworkConfig is one node's secondary addresses: what the node asks for and what the cloud
// holds. It is cluster-scoped, named after its Node and owned by it, so it goes when the node goes.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=nnc
// +kubebuilder:printcolumn:name="Requested",type=integer,JSONPath=`.spec.requestedIPCount`,description="secondary addresses the node asks for"
// +kubebuilder:printcolumn:name="Assigned",type=integer,JSONPath=`.status.assignedIPCount`,description="secondary addresses the cloud holds for the node"
// +kubebuilder:printcolumn:name="Free",type=integer,JSONPath=`.status.freeIPCount`,description="addresses the node reported unused (held minus assigned to pods) at its last request"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Last Error",type=string,JSONPath=`.status.lastError`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodeNetworkConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   NodeNetworkConfigSpec   `json:"spec,omitempty"`
	Status NodeNetworkConfigStatus `json:"status,omitempty"`
}

// NodeNetworkConfigSpec is what the node asks for. Only the node's own cns writes it.
//
// +kubebuilder:validation:XValidation:rule="!has(self.inUseIPCount) || self.inUseIPCount <= 256",message="inUseIPCount cannot exceed what a NIC holds"
type NodeNetworkConfigSpec struct {
	// RequestedIPCount is how many secondary addresses the node wants to hold once the addresses
	// in IPsNotInUse are gone. The controller adds addresses to reach it; it never removes an
	// address to reach it (only IPsNotInUse are removed).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=255
	// +kubebuilder:default=0
	RequestedIPCount int32 `json:"requestedIPCount"`

	// IPsNotInUse are addresses the node asks the cloud to take back: no pod holds them and the
	// node will not hand them out again. Applied once, for the generation that lists them.
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=15
	// +kubebuilder:validation:items:XValidation:rule="isIP(self) && ip(self).family() == 4",message="must be an IPv4 address"
	// +optional
	IPsNotInUse []string `json:"ipsNotInUse,omitempty"`

	// InUseIPCount is how many held addresses were assigned to pods when the node wrote this
	// spec; informational (the Free column), never acted on.
	// +kubebuilder:validation:Minimum=0
	// +optional
	InUseIPCount int32 `json:"inUseIPCount,omitempty"`
}

// NodeNetworkConfigStatus is what the cloud holds for the node. Only the controller writes it.
type NodeNetworkConfigStatus struct {
	// ObservedGeneration is the spec generation the controller last finished with: applied, or
	// given up on with a condition saying why. The node's write is complete when it catches up.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// NIC identifies the cloud interface and its version.
	// +optional
	NIC NIC `json:"nic,omitempty"`

	// Subnet is the primary ip configuration's subnet prefix, e.g. 10.240.0.0/16.
	// +optional
	Subnet string `json:"subnet,omitempty"`
	// Gateway is the subnet's gateway (its first address, as Azure reserves it).
	// +optional
	Gateway string `json:"gateway,omitempty"`
	// Primary is the node's own address; never handed to a pod.
	// +optional
	Primary string `json:"primary,omitempty"`

	// IPConfigurations are the NIC's secondary ip configurations.
	// +listType=map
	// +listMapKey=address
	// +optional
	IPConfigurations []IPConfiguration `json:"ipConfigurations,omitempty"`

	// ForeignIPConfigurations are the NIC's other secondary ip configurations (an operator's,
	// a load balancer's, IPv6 ones): they count against Scaler.MaxIPCount and the NIC's limit,
	// and are never assigned, removed or rewritten.
	// +listType=map
	// +listMapKey=name
	// +optional
	ForeignIPConfigurations []ForeignIPConfiguration `json:"foreignIPConfigurations,omitempty"`

	// AssignedIPCount is len(IPConfigurations), for the printer column.
	// +optional
	AssignedIPCount int32 `json:"assignedIPCount,omitempty"`
	// FreeIPCount is AssignedIPCount minus the node's InUseIPCount, for the printer column.
	// +optional
	FreeIPCount int32 `json:"freeIPCount,omitempty"`

	// Scaler are the limits the controller applies to this node's requests.
	// +optional
	Scaler Scaler `json:"scaler,omitempty"`

	// LastError is the last cloud failure for this node, empty once a write succeeds.
	// +optional
	LastError string `json:"lastError,omitempty"`

	// Conditions: Ready, SubnetFull, Throttled.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// NIC identifies the node's cloud interface.
type NIC struct {
	// ID is the ARM resource ID.
	ID string `json:"id,omitempty"`
	// ETag is the NIC version the status was read from.
	ETag string `json:"etag,omitempty"`
	// ProvisioningState as ARM reports it.
	ProvisioningState string `json:"provisioningState,omitempty"`
}

// IPConfiguration is one secondary ip configuration of the NIC.
type IPConfiguration struct {
	// Name of the ip configuration on the NIC, when the backend reports it.
	// +optional
	Name string `json:"name,omitempty"`
	// Address is its private IPv4 address.
	Address string `json:"address"`
}

// ForeignIPConfiguration is an ip configuration of the NIC that cns did not create.
type ForeignIPConfiguration struct {
	// Name of the ip configuration on the NIC.
	Name string `json:"name"`
	// Address is its private address (IPv4 or IPv6), empty when it has none yet.
	// +optional
	Address string `json:"address,omitempty"`
}

// Scaler are the limits the controller applies.
type Scaler struct {
	// MaxIPCount is the most secondary ip configurations one node's NIC may hold, foreign ones
	// included: the node may hold MaxIPCount minus len(ForeignIPConfigurations).
	MaxIPCount int32 `json:"maxIPCount,omitempty"`
}

// NodeNetworkConfigList is a list of NodeNetworkConfig.
//
// +kubebuilder:object:root=true
type NodeNetworkConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeNetworkConfig `json:"items"`
}
