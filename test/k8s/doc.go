// Package k8s runs a real Kubernetes control plane for tests: etcd and kube-apiserver built
// by `make k8s-bins` from the Go module proxy at pinned versions (see build/), started on
// loopback with certificates generated in Go, and removed — processes and files — when the
// test ends, also when it fails.
//
// The control plane is the first layer; kube-controller-manager, kube-scheduler and kubelet
// nodes are meant to join it through the same pieces: Bins locates every binary, PKI signs
// their certificates with the cluster CA, and process starts and stops a child with its log.
package k8s
