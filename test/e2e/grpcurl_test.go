package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vnet-cni/vnet-cni/test/nettest"
)

// repoFile reads a file at the module root.
func repoFile(t *testing.T, name string) string {
	t.Helper()
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(strings.TrimSpace(string(root))), name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// documentedGrpcurl returns the grpcurl commands a newcomer is told to type: the README's
// grpcurl block and the hints `make run` echoes, with the Makefile's variables expanded for
// a stack rooted at dir. WatchPool, a stream that never ends by itself, is left out.
func documentedGrpcurl(t *testing.T, dir, tools string) []string {
	var cmds []string
	readme := repoFile(t, "README.md")
	_, block, ok := strings.Cut(readme, "## Query cns with grpcurl")
	if !ok {
		t.Fatal("README has no grpcurl section")
	}
	_, block, _ = strings.Cut(block, "```sh\n")
	block, _, _ = strings.Cut(block, "```")
	for line := range strings.Lines(block) {
		if strings.HasPrefix(line, "grpcurl ") {
			cmds = append(cmds, strings.TrimSpace(line))
		}
	}
	echo := regexp.MustCompile(`(?m)^\t@echo "  (\$\(TOOLS\)/grpcurl .*)"$`)
	for _, m := range echo.FindAllStringSubmatch(repoFile(t, "Makefile"), -1) {
		c := strings.ReplaceAll(m[1], `\"`, `"`)
		c = strings.NewReplacer("$(TOOLS)", tools, "$(RUN_DIR)", filepath.Join(dir, ".run")).Replace(c)
		cmds = append(cmds, c)
	}
	var out []string
	for _, c := range cmds {
		if !strings.Contains(c, "WatchPool") {
			out = append(out, c)
		}
	}
	if len(out) < 6 {
		t.Fatalf("found only %d documented grpcurl commands: %q", len(out), out)
	}
	return out
}

// Every grpcurl command the README and `make run` show works, as typed, with the pinned
// grpcurl against a running mockarm and cns. Before, they used `-unix ./.run/cns.sock`,
// which grpcurl 1.9 (the current release) cannot dial.
func TestDocumentedGrpcurlCommandsWork(t *testing.T) {
	grpcurl := pinnedTool(t, "grpcurl")
	dir, err := os.MkdirTemp("", "vnet-grpcurl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	runDir := filepath.Join(dir, ".run")
	armAddr, tcpAddr := nettest.FreeLoopbackAddr(t), nettest.FreeLoopbackAddr(t)
	socket := filepath.Join(runDir, "cns.sock")
	startProc(t, dir, "mockarm", "--static-token", "mock", "--listen", armAddr)
	cns := startProc(t, dir, "cns", "--arm-endpoint", "http://"+armAddr, "--auth", "static",
		"--subscription", "00000000-0000-0000-0000-000000000000", "--resource-group", "vnet-rg", "--nic", "node0-nic",
		"--socket", socket, "--state", filepath.Join(runDir, "cns.db"), "--release-spool", filepath.Join(runDir, "spool"),
		"--listen", tcpAddr, "--metrics-listen", "")
	cnsClient(t, socket, cns.log)

	for _, c := range documentedGrpcurl(t, dir, filepath.Dir(grpcurl)) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, "bash", "-c", strings.ReplaceAll(c, "127.0.0.1:10090", tcpAddr))
		cmd.Dir = dir // the README's $PWD is the repository root, which holds .run/
		cmd.Env = append(os.Environ(), "PWD="+dir, "PATH="+filepath.Dir(grpcurl)+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("documented command failed: %s\n%v: %s", c, err, out)
		}
	}
}
