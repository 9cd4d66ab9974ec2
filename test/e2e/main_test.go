// Package e2e drives the built binaries the way container runtimes do: vnet-cni through
// cnitool and libcni, inside network namespaces the tests create.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var (
	binDir  string // holds the freshly built vnet-cni (and cns, mockarm)
	cnitool string // pinned cnitool from .tools/bin (make tools)
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vnet-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/vnet-cni/vnet-cni/cmd/vnet-cni",
		"github.com/vnet-cni/vnet-cni/cmd/cns", "github.com/vnet-cni/vnet-cni/cmd/mockarm")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.Exit(1)
	}
	if root, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
		p := filepath.Join(filepath.Dir(string(root[:len(root)-1])), ".tools", "bin", "cnitool")
		if _, err := os.Stat(p); err == nil {
			cnitool = p
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireCNITool fails under CI (make test installs it) and skips elsewhere.
func requireCNITool(t *testing.T) {
	t.Helper()
	if cnitool != "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("cnitool not found in .tools/bin: run make tools")
	}
	t.Skip("cnitool not installed: run make tools")
}

// pinnedTool returns .tools/bin/name (make tools installs it); missing, it fails under CI
// and skips elsewhere.
func pinnedTool(t *testing.T, name string) string {
	t.Helper()
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err == nil {
		p := filepath.Join(filepath.Dir(strings.TrimSpace(string(root))), ".tools", "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found in .tools/bin: run make tools", name)
	}
	t.Skipf("%s not installed: run make tools", name)
	return ""
}
