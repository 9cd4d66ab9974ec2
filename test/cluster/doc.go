// Package cluster runs cluster mode for tests and make bench-cluster: a real kube-apiserver +
// etcd (controller-runtime's envtest over the pinned binaries) with the NodeNetworkConfig
// CRD, mockarm with its ARM token bucket, vnet-controller instances (leader and standbys), and
// simulated nodes — cns pool managers without a datapath, in CRD mode or in direct mode.
package cluster
