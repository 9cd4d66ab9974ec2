package k8s

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Config selects the API server and this node.
type Config struct {
	// Kubeconfig is a kubeconfig path. Empty: the in-cluster config when cns runs in a pod
	// (KUBERNETES_SERVICE_HOST set), otherwise no API server at all.
	Kubeconfig string
	// NodeName is this node's name in the API server; see NodeName.
	NodeName string
	// Timeout bounds every call but the informer's watch (which the server ends itself).
	Timeout time.Duration
	// GCGrace is how long an allocation's pod must be absent (or carry another UID) before
	// the allocation is released.
	GCGrace time.Duration
}

// Enabled reports whether an API server is configured.
func (c Config) Enabled() bool {
	return c.Kubeconfig != "" || os.Getenv("KUBERNETES_SERVICE_HOST") != ""
}

// ResolveNodeName returns the node name: the flag, else $NODE_NAME (the DaemonSet sets it
// from spec.nodeName), else the host name as kubelet registers it (lower case).
func ResolveNodeName(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if n := os.Getenv("NODE_NAME"); n != "" {
		return n, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("node name: no --node-name, no NODE_NAME and no host name: %w", err)
	}
	return strings.ToLower(h), nil
}

// NewClient builds a clientset from c: the kubeconfig, or the in-cluster config.
func NewClient(c Config) (kubernetes.Interface, error) {
	rc, err := RestConfig(c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	rc.UserAgent = "cns"
	// One watch and a few GETs per GC round: well inside the defaults, but a burst of
	// confirmations should not queue behind client-side throttling.
	rc.QPS, rc.Burst = 20, 40
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("API server client: %w", err)
	}
	return cs, nil
}

// RestConfig is how cns reaches the API server, for pod demand and for cluster mode alike:
// the --kubeconfig file, else the in-cluster config inside a pod, else an error (a node
// daemon never guesses a kubeconfig from $HOME).
func RestConfig(kubeconfig string) (*rest.Config, error) {
	var (
		rc  *rest.Config
		err error
	)
	switch {
	case kubeconfig != "":
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	case os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		rc, err = rest.InClusterConfig()
	default:
		return nil, errors.New("no --kubeconfig and not running in a pod")
	}
	if err != nil {
		return nil, fmt.Errorf("API server config: %w", err)
	}
	return rc, nil
}
