package k8s

import (
	"os"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

func TestNodePathMapsNodeDirectories(t *testing.T) {
	n := &Node{Cfg: NodeConfig{Dir: "/d"}}
	for in, want := range map[string]string{
		"/run/cns/cns.sock":               "/d/run/cns/cns.sock",
		"/etc/cni/net.d/10-vnet.conflist": "/d/etc.up/cni/net.d/10-vnet.conflist",
		"/opt/cni/bin/vnet-cni":           "/d/opt.up/cni/bin/vnet-cni",
		"/var/lib/cns":                    "/d/varlib/cns",
		"/runx":                           "",
		"/usr/bin":                        "",
	} {
		if got := n.Path(in); got != want {
			t.Errorf("Path(%s) = %q, want %q", in, got, want)
		}
	}
}

func TestRefConflistIsAValidConfigurationList(t *testing.T) {
	l, err := libcni.NetworkConfFromBytes([]byte(refConflist("10.200.1.0/24")))
	if err != nil {
		t.Fatal(err)
	}
	if l.Name != "ref" || len(l.Plugins) != 1 || l.Plugins[0].Network.Type != "ptp" {
		t.Errorf("unexpected list %+v", l)
	}
}

// The sweep of make demo-k8s-down never kills the process that runs it or its shell.
func TestAncestorsHoldSelfAndParent(t *testing.T) {
	a := ancestors()
	if !a[os.Getpid()] || !a[os.Getppid()] {
		t.Errorf("ancestors %v lack %d or %d", a, os.Getpid(), os.Getppid())
	}
}
