// Package crd is cns's cloud boundary in cluster mode: the node never calls ARM. A scale
// decision becomes a patch of the node's own NodeNetworkConfig spec; the NIC view is that
// object's status, which the cluster controller writes and an informer delivers (watched, not
// polled). A write is complete when status.observedGeneration reaches the patched generation.
package crd
