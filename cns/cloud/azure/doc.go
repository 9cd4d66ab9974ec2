// Package azure is cns's cloud backend on Azure Resource Manager: the armnetwork
// InterfacesClient and SubnetsClient with an azidentity credential. Pointed at another
// endpoint (mockarm) through arm.ClientOptions, the very same code runs locally.
//
// It creates ip configurations named cloud.OwnConfigPrefix + 12 hex digits, reports every
// other one as foreign, and carries foreign ones through each NIC write unchanged. It drives
// the long-running NIC write itself: in production it waits ARM's Retry-After between polls
// (DefaultPollInterval without one); fast polling is for mockarm.
package azure
