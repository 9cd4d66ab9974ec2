// Package azure is cns's cloud backend on Azure Resource Manager. A standalone VM's NIC is
// read and written with armnetwork's InterfacesClient (NIC PUT); a uniform scale-set
// instance's ip configurations are written by updating the instance with armcompute's
// VirtualMachineScaleSetVMsClient and read from the NIC under it. Both share one error
// classification and one long-running-operation driver (drive). Credentials are
// azidentity's (managed identity by default); DiscoverNIC finds the node's NIC from what
// IMDS said. Pointed at another endpoint (mockarm) through arm.ClientOptions, the very same
// code runs locally.
//
// It creates ip configurations named cloud.OwnConfigPrefix + 12 hex digits, reports every
// other one as foreign, and carries foreign ones through each write unchanged. It drives
// the long-running write itself: in production it waits ARM's Retry-After between polls
// (DefaultPollInterval without one); fast polling is for mockarm.
package azure
