// Package azure is cns's cloud backend on Azure Resource Manager: the armnetwork
// InterfacesClient and SubnetsClient with an azidentity credential. Pointed at another
// endpoint (mockarm) through arm.ClientOptions, the very same code runs locally.
package azure
