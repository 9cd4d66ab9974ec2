// Package deploy holds the manifests that install vnet-cni on a cluster — the cns
// ServiceAccount and its least RBAC (rbac.yaml), and the cns DaemonSet with its install-cni
// companion (daemonset.yaml) — embedded so tests apply exactly the files in the repository.
package deploy

import "embed"

// Manifests are rbac.yaml and daemonset.yaml, in apply order.
//
//go:embed rbac.yaml daemonset.yaml
var Manifests embed.FS

// Files lists the manifests in apply order.
var Files = []string{"rbac.yaml", "daemonset.yaml"}
