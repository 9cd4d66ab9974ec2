package mockarm

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestAdminEndpointIsOffUnlessEnabled(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		cfg := DefaultConfig()
		cfg.Admin = enabled
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(s)
		resp, err := http.Post(srv.URL+"/admin/faults", "application/json", strings.NewReader(`{"op":"put-nic","status":500}`))
		srv.Close()
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := http.StatusNotFound
		if enabled {
			want = http.StatusNoContent
		}
		if resp.StatusCode != want {
			t.Fatalf("admin enabled=%v: POST /admin/faults answered %d, want %d", enabled, resp.StatusCode, want)
		}
	}
}

func TestSubnetReservesAzureAddresses(t *testing.T) {
	s := newSubnet(netip.MustParsePrefix("10.0.0.0/29"))
	var got []string
	for {
		a, err := s.next("x")
		if err != nil {
			if !strings.Contains(err.Error(), "SubnetIsFull") {
				t.Fatalf("exhaustion error %v", err)
			}
			break
		}
		got = append(got, a.String())
	}
	// .0 network, .1 gateway, .2-.3 DNS, .7 broadcast are Azure's.
	if strings.Join(got, ",") != "10.0.0.4,10.0.0.5,10.0.0.6" {
		t.Fatalf("allocated %v", got)
	}
}
