package controller

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"

	"github.com/vnet-cni/vnet-cni/cns/cloud"
	"github.com/vnet-cni/vnet-cni/cns/cloud/azure"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
)

// inProcess serves requests with h in this goroutine: no sockets, so mockarm's bucket and the
// budget share synctest's clock.
type inProcess struct{ h http.Handler }

func (p inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	p.h.ServeHTTP(rec, req)
	res := rec.Result()
	res.Request = req // azcore's poller reads the request's URL and method
	return res, nil
}

func (p inProcess) Do(req *http.Request) (*http.Response, error) { return p.RoundTrip(req) }

// nicClient is an ARM client of NIC name on arm through tr.
func nicClient(t *testing.T, tr interface {
	Do(*http.Request) (*http.Response, error)
}, name string) *azure.Client {
	t.Helper()
	c := mockarm.DefaultConfig()
	cl, err := azure.New(azure.Config{Endpoint: "http://arm.test", Subscription: c.Subscription, ResourceGroup: c.ResourceGroup,
		NIC: name, Auth: azure.AuthStatic, StaticToken: "mock", Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func grow(t *testing.T, c *azure.Client) error {
	t.Helper()
	nic, err := c.GetNIC(t.Context())
	if err != nil {
		return err
	}
	_, err = c.UpdateIPConfigs(t.Context(), cloud.Change{ETag: nic.ETag, Add: 1})
	return err
}

// mockarm says on every write how many writes the subscription has left; the budget takes
// it, so a controller whose own bucket believes in a full 200 does not earn 429s when another
// writer has spent most of ARM's bucket. Watched failing (429s) before mockarm sent the header.
func TestBudgetKeepsUnderMockarmsBucketWhenAnotherWriterSpentIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mc := mockarm.DefaultConfig()
		mc.WriteBurst, mc.WriteRate, mc.AutoCreateNICs, mc.Log = 10, 2, true, slog.New(slog.DiscardHandler)
		mc.RequireToken = false
		arm, err := mockarm.New(mc)
		if err != nil {
			t.Fatal(err)
		}
		other := nicClient(t, inProcess{arm}, "other-nic")
		for range 8 { // another writer of the subscription: 2 of ARM's 10 writes are left
			if err := grow(t, other); err != nil {
				t.Fatal(err)
			}
		}
		budget := NewBudget(200, 2)
		tr := &Transport{Budget: budget, Next: inProcess{arm}}
		for i := range 10 {
			if err := grow(t, nicClient(t, tr, fmt.Sprintf("n%d-nic", i))); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
		}
		if st := arm.Stats(); st.Throttled != 0 {
			t.Fatalf("mockarm answered %d writes with 429; the budget should have followed its remaining-writes count", st.Throttled)
		}
	})
}
