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
	for _, tc := range []struct {
		name string
		env  *string // nil: unset
		want int
	}{
		{"unset", nil, 1},
		{"set by the operator", ptr("3"), 3},
		{"empty, which the runtime ignores", ptr(""), 1},
		{"zero, which the runtime ignores", ptr("0"), 1},
		{"not a number, which the runtime ignores", ptr("lots"), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want == 1 && runtime.NumCPU() == 1 {
				t.Skip("one CPU: the runtime would choose 1 without this package")
			}
			env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, Env+"=") })
			env = append(env, reportEnv+"=1")
			if tc.env != nil {
				env = append(env, Env+"="+*tc.env)
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
				t.Errorf("GOMAXPROCS %d, want %d", got, tc.want)
			}
		})
	}
}

func ptr(s string) *string { return &s }

// TestOneProcessorIsSetEarlyInInit builds the plugin and reads its init order
// (GODEBUG=inittrace=1). Set from main's init, after every other package's, one processor
// saved at most half as much (doc.go); this keeps the call ahead of the packages whose inits
// do the work.
func TestOneProcessorIsSetEarlyInInit(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "vnet-cni")
	// -race=false: a GOFLAGS=-race in the environment would ask for cgo.
	build := exec.Command("go", "build", "-race=false", "-o", bin, "github.com/vnet-cni/vnet-cni/cmd/vnet-cni")
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
	later := map[string]bool{"os": true, "time": true, "context": true, "reflect": true, "unicode": true,
		"regexp": true, "regexp/syntax": true, "net": true, "encoding/json": true}
	var before []string
	bytesBefore, bytesAfter, seen := 0, 0, false
	for _, m := range line.FindAllStringSubmatch(string(out), -1) {
		n, _ := strconv.Atoi(m[2])
		switch {
		case m[1] == self:
			seen = true
		case seen:
			bytesAfter += n
		default:
			before, bytesBefore = append(before, m[1]), bytesBefore+n
		}
	}
	if !seen {
		t.Fatalf("no init of %s in vnet-cni's init trace:\n%s", self, out)
	}
	for _, p := range before {
		if first, _, _ := strings.Cut(p, "/"); strings.Contains(first, ".") || later[p] {
			t.Errorf("%s initializes before %s", p, self)
		}
	}
	// A loose bound on what the standard library's earliest inits allocate (2.7 KB today).
	if bytesBefore > 16<<10 {
		t.Errorf("inits before %s allocate %d bytes, want at most 16 KiB", self, bytesBefore)
	}
	t.Logf("before %s: %d bytes in %v; after it: %d bytes", self, bytesBefore, before, bytesAfter)
}
