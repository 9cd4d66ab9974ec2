// Package e2e is vnet-cni on real Kubernetes: a 2-node cluster of real kubelets in the
// emulated VNet (test/k8s), vnet-cni deployed from cns/deploy, and suites that check what a
// user relies on — pod addresses from the VNet, no NAT inside it, Services, egress SNAT,
// scale-down, cns restarts and node drains. Its tests carry the e2e build tag: `make e2e`.
package e2e
