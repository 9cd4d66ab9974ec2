// Package mockarm is a local Azure Resource Manager for the routes cns uses: network
// interface GET/PUT (If-Match etags, Azure-AsyncOperation long-running operations), subnet
// GET and operation status. It keeps a subnet allocator (Azure reserves the first four
// addresses and the last), Azure's 256 ip configurations per NIC, a per-subscription write
// token bucket answering 429 with Retry-After, configurable latency, injectable faults and a
// state file. The armnetwork SDK cannot tell it from ARM.
//
// It also serves the compute side (VM GET; uniform scale-set VM GET and update, whose network
// profile writes the instance's NIC through the same path as a NIC PUT; the instance's NIC)
// and, on a separate handler, IMDS: instance metadata and managed identity tokens for the
// node calling from a VM's primary address. With RequireToken, ARM calls without a token it
// issued (or a configured static one) get 401.
//
// A Fabric, when set, is told the VNet's routes: every ip configuration's address lives on
// its NIC's node, i.e. behind the NIC's primary address.
package mockarm
