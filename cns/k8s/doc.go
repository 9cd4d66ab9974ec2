// Package k8s is cns's view of Kubernetes from the node: the pods bound to this node, read
// through a client-go informer with the field selector spec.nodeName=<node>.
//
// Two uses, both in package cns: pods bound here that hold no address yet are demand (the pool
// grows for them before their CNI ADDs arrive), and allocations whose pod is gone, or was
// recreated under another UID, are garbage-collected. The informer cache only nominates GC
// candidates: nothing is released while the informer has not synced, and every release is
// confirmed first by a live GET against the API server (a quorum read), so a stale cache or a
// failed watch never frees an address a running pod holds.
package k8s
