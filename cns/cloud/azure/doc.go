// Package azure is cns's cloud backend on Azure Resource Manager. A standalone VM's NIC is
// read and written with armnetwork's InterfacesClient (NIC PUT); a uniform scale-set
// instance's ip configurations are written by updating the instance with armcompute's
// VirtualMachineScaleSetVMsClient and read from the NIC under it. Both share one error
// classification and one long-running-operation driver. Credentials are azidentity's
// (managed identity by default); DiscoverNIC finds the node's NIC from what IMDS said.
// Pointed at another endpoint (mockarm) through arm.ClientOptions, the very same code runs
// locally.
package azure
