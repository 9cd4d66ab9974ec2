package plugin

import (
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cnsv1 "github.com/vnet-cni/vnet-cni/proto/cns/v1"
)

// The plugin reads cns's ErrorInfo without the errdetails package; this pins the reading
// to what errdetails encodes, fields before and after the domain included.
func TestCNSAnswerIsToldFromTransportStatus(t *testing.T) {
	with := func(d *errdetails.ErrorInfo) *status.Status {
		s, err := status.New(codes.Unavailable, "x").WithDetails(d)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	cases := []struct {
		name string
		s    *status.Status
		want bool
	}{
		{"cns ErrorInfo", with(&errdetails.ErrorInfo{Reason: "Unavailable", Domain: cnsv1.ErrorDomain, Metadata: map[string]string{"k": "v"}}), true},
		{"domain only", with(&errdetails.ErrorInfo{Domain: cnsv1.ErrorDomain}), true},
		{"metadata before reading domain", with(&errdetails.ErrorInfo{Metadata: map[string]string{"a": "b"}, Domain: cnsv1.ErrorDomain}), true},
		{"other domain", with(&errdetails.ErrorInfo{Reason: "x", Domain: "googleapis.com"}), false},
		{"another detail type", func() *status.Status {
			s, _ := status.New(codes.Unavailable, "x").WithDetails(&errdetails.RetryInfo{})
			return s
		}(), false},
		{"transport status, no details", status.New(codes.Unavailable, "connection refused"), false},
	}
	for _, c := range cases {
		if got := isCNSAnswer(c.s); got != c.want {
			t.Errorf("%s: isCNSAnswer = %v, want %v", c.name, got, c.want)
		}
	}
	if got := errorInfoDomain([]byte{0x12, 0x7f, 'a'}); got != "" {
		t.Errorf("truncated ErrorInfo: domain %q, want none", got)
	}
}
