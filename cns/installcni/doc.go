// Package installcni is the DaemonSet's install step: it waits until cns reports gRPC health
// SERVING for cns.v1.IPAMService (the pool has read its NIC and can answer ADDs), then
// installs the vnet-cni plugin into the CNI bin directory and the conflist into the CNI conf
// directory, each by an atomic rename. kubelet keeps a node NotReady while it has no CNI
// config, so pods reach the node only once its pool can serve them.
//
// The same binary is the DaemonSet's health probe (--probe): kubelet's own gRPC probe dials
// the pod IP, which for a hostNetwork pod is not the loopback address cns serves health on.
package installcni
