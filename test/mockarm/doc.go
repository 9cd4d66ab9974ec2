// Package mockarm is a local Azure Resource Manager for the routes cns uses: network
// interface GET/PUT (If-Match etags, Azure-AsyncOperation long-running operations), subnet
// GET and operation status. It keeps a subnet allocator (Azure reserves the first four
// addresses and the last), Azure's 256 ip configurations per NIC, a per-subscription write
// token bucket answering 429 with Retry-After, configurable latency, injectable faults and a
// state file. The armnetwork SDK cannot tell it from ARM.
//
// A Fabric, when set, is told the VNet's routes: every ip configuration's address lives on
// its NIC's node, i.e. behind the NIC's primary address.
package mockarm
