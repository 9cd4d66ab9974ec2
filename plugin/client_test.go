package plugin

import (
	"os/exec"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/vnet-cni/vnet-cni/plugin/unary"
	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
	cnsv1grpc "github.com/vnet-cni/vnet-cni/proto/cns/v1/cnsv1grpc"
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
		{"cns ErrorInfo", with(&errdetails.ErrorInfo{Reason: "Unavailable", Domain: cnsv1.ErrorDomain, Metadata: map[string]string{"k": "v"}}), true},
		{"domain only", with(&errdetails.ErrorInfo{Domain: cnsv1.ErrorDomain}), true},
		{"metadata before reading domain", with(&errdetails.ErrorInfo{Metadata: map[string]string{"a": "b"}, Domain: cnsv1.ErrorDomain}), true},
		{"after another detail", with(&errdetails.RetryInfo{}, &errdetails.ErrorInfo{Domain: cnsv1.ErrorDomain}), true},
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

// The plugin is exec'd for every pod: grpc-go's transport and the packages that register
// descriptors at init (status, errdetails, reflection) stay out of it, and so does net/http
// (its init, with TLS and x509, cost 4 ms per exec). grpc/codes (the code numbers) is allowed.
func TestPluginLinksNoGRPCTransport(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/vnet-cni/vnet-cni/cmd/vnet-cni").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := map[string]bool{"google.golang.org/grpc/codes": true, "google.golang.org/grpc/internal": true,
		"google.golang.org/grpc/grpclog": true, "google.golang.org/grpc/grpclog/internal": true,
		"google.golang.org/grpc/connectivity": true, "google.golang.org/grpc/serviceconfig": true}
	for p := range strings.FieldsSeq(string(out)) {
		if (strings.HasPrefix(p, "google.golang.org/grpc") || strings.HasPrefix(p, "google.golang.org/genproto")) && !allowed[p] ||
			p == "net/http" || p == "crypto/tls" {
			t.Errorf("vnet-cni links %s", p)
		}
	}
}
