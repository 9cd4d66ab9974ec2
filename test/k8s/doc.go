// Package k8s runs real Kubernetes for tests and the demo: etcd and kube-apiserver built by
// `make k8s-bins` from the Go module proxy at pinned versions (see build/), started on
// loopback with certificates generated in Go, and removed — processes and files — when the
// test ends, also when it fails.
//
// Start is the control plane alone. NewCluster adds kube-controller-manager and
// kube-scheduler, puts the apiserver on the gateway of an emulated VNet (test/vnet), and
// runs a node in each of the VNet's node namespaces: a private mount namespace in which
// containerd, kubelet and kube-proxy run, the node IP being the node's VNet primary
// address. Deploy installs vnet-cni from cns/deploy with kubectl, as a user would.
// RunDemo is make demo-k8s.
package k8s
