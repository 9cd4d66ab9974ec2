package k8s

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vnet-cni/vnet-cni/cns/deploy"
)

// The manifests in cns/deploy pass the real API server's validation and admission
// (kubectl apply --dry-run=server), and the RBAC they grant is enough for cns and no more.
func TestDeployManifestsApplyOnRealAPIServer(t *testing.T) {
	cp := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := repoDeploy(t)
	out, err := cp.Kubectl(ctx, "apply", "--dry-run=server", "-f", dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"serviceaccount/cns", "clusterrole.rbac.authorization.k8s.io/vnet-cni:cns", "daemonset.apps/cns"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dry-run output lacks %s:\n%s", want, out)
		}
	}
	for _, f := range deploy.Files {
		if _, err := deploy.Manifests.ReadFile(f); err != nil {
			t.Errorf("embedded manifest %s: %v", f, err)
		}
	}

	kc := cnsKubeconfig(t, ctx, cp)
	as := func(verb, res string) string {
		o, _ := cp.Kubectl(ctx, "--kubeconfig", kc, "auth", "can-i", verb, res, "--all-namespaces")
		return strings.TrimSpace(string(o))
	}
	for _, c := range []struct{ verb, res, want string }{
		{"list", "pods", "yes"}, {"watch", "pods", "yes"}, {"get", "pods", "yes"}, {"get", "nodes", "yes"},
		{"create", "pods", "no"}, {"delete", "pods", "no"}, {"list", "secrets", "no"}, {"update", "nodes", "no"},
	} {
		if got := as(c.verb, c.res); got != c.want {
			t.Errorf("cns can-i %s %s: %q, want %q", c.verb, c.res, got, c.want)
		}
	}
}
