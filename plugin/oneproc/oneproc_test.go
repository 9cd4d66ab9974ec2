package oneproc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const reportEnv = "VNET_ONEPROC_REPORT"

// TestHelperReportsGOMAXPROCS is the child of TestOneProcessorUnlessTheEnvironmentSetsIt: this
// test binary imports the package, so its init has run when the child reports.
func TestHelperReportsGOMAXPROCS(t *testing.T) {
	if os.Getenv(reportEnv) == "" {
		return
	}
	fmt.Printf("GOMAXPROCS=%d\n", runtime.GOMAXPROCS(0))
}

func TestOneProcessorUnlessTheEnvironmentSetsIt(t *testing.T) {
	if runtime.NumCPU() == 1 {
		t.Log("one CPU: the runtime would choose 1 without this package too")
	}
	for _, tc := range []struct {
		name, env string
		want      int
	}{
		{"unset", "", 1},
		{"set by the operator", "3", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, Env+"=") })
			env = append(env, reportEnv+"=1")
			if tc.env != "" {
				env = append(env, Env+"="+tc.env)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperReportsGOMAXPROCS$", "-test.count=1")
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			m := regexp.MustCompile(`GOMAXPROCS=(\d+)`).FindSubmatch(out)
			if m == nil {
				t.Fatalf("child did not report GOMAXPROCS:\n%s", out)
			}
			if got, _ := strconv.Atoi(string(m[1])); got != tc.want {
				t.Errorf("GOMAXPROCS %d with %s=%q, want %d", got, Env, tc.env, tc.want)
			}
		})
	}
}

// TestOneProcessorIsSetBeforeTheInitsThatAllocate builds the plugin and reads its init order
// (GODEBUG=inittrace=1): set after the other packages' inits, one processor saved nothing.
func TestOneProcessorIsSetBeforeTheInitsThatAllocate(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "vnet-cni")
	build := exec.Command("go", "build", "-o", bin, "github.com/vnet-cni/vnet-cni/cmd/vnet-cni")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := exec.Command(bin)
	run.Env = append(os.Environ(), "CNI_COMMAND=VERSION", "GODEBUG=inittrace=1")
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("vnet-cni VERSION: %v\n%s", err, out)
	}
	// init <package> @<t> ms, <clock> ms clock, <bytes> bytes, <allocs> allocs
	line := regexp.MustCompile(`(?m)^init (\S+) @\S+ ms, \S+ ms clock, (\d+) bytes, \d+ allocs$`)
	const self = "github.com/vnet-cni/vnet-cni/plugin/oneproc"
	var before, after []string
	var bytesBefore, bytesAfter int
	seen := false
	for _, m := range line.FindAllStringSubmatch(string(out), -1) {
		n, _ := strconv.Atoi(m[2])
		switch {
		case m[1] == self:
			seen = true
		case seen:
			after, bytesAfter = append(after, m[1]), bytesAfter+n
		default:
			before, bytesBefore = append(before, m[1]), bytesBefore+n
		}
	}
	if !seen {
		t.Fatalf("no init of %s in vnet-cni's init trace:\n%s", self, out)
	}
	for _, p := range before {
		if first, _, _ := strings.Cut(p, "/"); strings.Contains(first, ".") || p == "os" {
			t.Errorf("%s initializes before %s", p, self)
		}
	}
	// Today 2.7 KB before it and 40 KB after.
	if bytesBefore > 4<<10 || bytesBefore*4 > bytesAfter {
		t.Errorf("inits before %s allocate %d bytes, after it %d; want at most 4 KiB and a quarter of what follows",
			self, bytesBefore, bytesAfter)
	}
	t.Logf("before %s: %d bytes in %v; after: %d bytes in %d inits", self, bytesBefore, before, bytesAfter, len(after))
}
