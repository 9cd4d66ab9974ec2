package plugin

import (
	"os/exec"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/vnet-cni/vnet-cni/plugin/unary"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
	"github.com/vnet-cni/vnet-cni/proto/cns/v1/contract"
)

// The plugin reads cns's ErrorInfo without the errdetails package; this pins the reading
// to what errdetails encodes, fields before and after the domain included.
func TestCNSAnswerIsToldFromTransportStatus(t *testing.T) {
	with := func(ds ...proto.Message) *unary.Error {
		e := &unary.Error{Message: "x"}
		for _, d := range ds {
			a, err := anypb.New(d)
			if err != nil {
				t.Fatal(err)
			}
			e.Details = append(e.Details, unary.Any{TypeURL: a.GetTypeUrl(), Value: a.GetValue()})
		}
		return e
	}
	cases := []struct {
		name string
		e    *unary.Error
		want bool
	}{
		{"cns ErrorInfo", with(&errdetails.ErrorInfo{Reason: "Unavailable", Domain: contract.ErrorDomain, Metadata: map[string]string{"k": "v"}}), true},
		{"domain only", with(&errdetails.ErrorInfo{Domain: contract.ErrorDomain}), true},
		{"metadata before reading domain", with(&errdetails.ErrorInfo{Metadata: map[string]string{"a": "b"}, Domain: contract.ErrorDomain}), true},
		{"after another detail", with(&errdetails.RetryInfo{}, &errdetails.ErrorInfo{Domain: contract.ErrorDomain}), true},
		{"other domain", with(&errdetails.ErrorInfo{Reason: "x", Domain: "googleapis.com"}), false},
		{"another detail type", with(&errdetails.RetryInfo{}), false},
		{"transport status, no details", with(), false},
	}
	for _, c := range cases {
		if got := isCNSAnswer(c.e); got != c.want {
			t.Errorf("%s: isCNSAnswer = %v, want %v", c.name, got, c.want)
		}
	}
	if got := errorInfoDomain([]byte{0x12, 0x7f, 'a'}); got != "" {
		t.Errorf("truncated ErrorInfo: domain %q, want none", got)
	}
}

// The plugin names cns's methods without importing the generated services.
func TestMethodNamesAreTheServices(t *testing.T) {
	for got, want := range map[string]string{
		methodRequestIPs:      cnsv1grpc.IPAMService_RequestIPs_FullMethodName,
		methodReleaseIPs:      cnsv1grpc.IPAMService_ReleaseIPs_FullMethodName,
		methodGarbageCollect:  cnsv1grpc.IPAMService_GarbageCollect_FullMethodName,
		methodStatus:          cnsv1grpc.IPAMService_Status_FullMethodName,
		methodListAllocations: cnsv1grpc.PoolService_ListAllocations_FullMethodName,
	} {
		if got != want {
			t.Errorf("method %q, the service says %q", got, want)
		}
	}
}

// TestPluginLinksNoRPCRuntimes keeps out of the plugin, exec'd for every pod, the package
// init of grpc-go (even its codes package links its logger and registries), net/http (with
// TLS and x509, 4 ms per exec), and protobuf's runtime and registry with the generated
// messages that register their descriptors (3 ms): of protobuf it links only protowire.
func TestPluginLinksNoRPCRuntimes(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/vnet-cni/vnet-cni/cmd/vnet-cni").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := map[string]bool{"google.golang.org/protobuf/encoding/protowire": true,
		"google.golang.org/protobuf/internal/errors": true, "google.golang.org/protobuf/internal/detrand": true}
	for p := range strings.FieldsSeq(string(out)) {
		if strings.HasPrefix(p, "google.golang.org/") && !allowed[p] || p == "net/http" || p == "crypto/tls" ||
			strings.HasPrefix(p, "github.com/vnet-cni/vnet-cni/proto/cns/v1") && p != "github.com/vnet-cni/vnet-cni/proto/cns/v1/contract" {
			t.Errorf("vnet-cni links %s", p)
		}
	}
}
