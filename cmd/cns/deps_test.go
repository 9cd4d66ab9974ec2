package main

import (
	"os/exec"
	"strings"
	"testing"
)

// cns's idle memory is mostly the pages of its own binary that package init touches
// (README, Performance): these packages cost it megabytes and cns uses none of them.
// The tags are the Makefile's BUILD_TAGS.
func TestCNSLinksNoHeavyPackages(t *testing.T) {
	out, err := exec.Command("go", "list", "-tags", "grpcnotrace", "-deps", "github.com/vnet-cni/vnet-cni/cmd/cns").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	banned := map[string]string{
		"k8s.io/client-go/kubernetes/scheme":        "registers every built-in API group at init; use a scheme of the types read",
		"k8s.io/client-go/kubernetes":               "the clientset; cns reads pods through a REST client",
		"k8s.io/client-go/gentype":                  "links client-go's fake tracker, apply and OpenAPI models",
		"k8s.io/client-go/discovery":                "imports the clientset's scheme",
		"sigs.k8s.io/controller-runtime/pkg/client": "imports discovery; the controller may use it, cns not",
		"golang.org/x/net/trace":                    "grpc without the grpcnotrace tag",
	}
	for _, p := range strings.Fields(string(out)) {
		if why, ok := banned[p]; ok {
			t.Errorf("cns links %s: %s", p, why)
		}
	}
}
