package imds_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vnet-cni/vnet-cni/cns/imds"
)

const standalone = `{"compute":{"subscriptionId":"sub1","resourceGroupName":"rg1","name":"vm1","location":"westeurope",
 "resourceId":"/subscriptions/sub1/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1","vmScaleSetName":""},
 "network":{"interface":[{"macAddress":"000D3AF806EC","ipv4":{"ipAddress":[{"privateIpAddress":"10.240.0.4","publicIpAddress":""}],
 "subnet":[{"address":"10.240.0.0","prefix":"16"}]}}]}}`

const scaleSet = `{"compute":{"subscriptionId":"sub1","resourceGroupName":"MC_rg","name":"aks-pool1-vmss_7",
 "resourceId":"/subscriptions/sub1/resourceGroups/MC_rg/providers/Microsoft.Compute/virtualMachineScaleSets/aks-pool1-vmss/virtualMachines/7",
 "vmScaleSetName":"aks-pool1-vmss"},
 "network":{"interface":[{"macAddress":"000D3AF806ED","ipv4":{"ipAddress":[{"privateIpAddress":"10.240.0.5"}]}}]}}`

// server answers with the given statuses in turn (the last repeats), and body on 200.
func server(t *testing.T, body string, statuses ...int) (*imds.Client, *atomic.Int32) {
	t.Helper()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(calls.Add(1))
		if r.Header.Get("Metadata") != "true" || r.URL.Path != "/metadata/instance" || r.URL.Query().Get("api-version") == "" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		st := http.StatusOK
		if len(statuses) > 0 {
			st = statuses[min(n, len(statuses))-1]
		}
		if st != http.StatusOK {
			http.Error(w, http.StatusText(st), st)
			return
		}
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return &imds.Client{Endpoint: srv.URL, BackoffMin: time.Millisecond, BackoffMax: 2 * time.Millisecond, Attempts: 4}, &calls
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestStandaloneVMIsReadFromInstanceMetadata(t *testing.T) {
	c, _ := server(t, standalone)
	inst, err := c.Instance(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if inst.SubscriptionID != "sub1" || inst.ResourceGroup != "rg1" || inst.Name != "vm1" || inst.ScaleSet != "" || inst.InstanceID != "" ||
		inst.MAC.String() != "00:0d:3a:f8:06:ec" || len(inst.Addresses) != 1 || inst.Addresses[0] != netip.MustParseAddr("10.240.0.4") {
		t.Fatalf("instance %+v", inst)
	}
}

func TestScaleSetInstanceIDComesFromResourceIDOrName(t *testing.T) {
	c, _ := server(t, scaleSet)
	inst, err := c.Instance(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if inst.ScaleSet != "aks-pool1-vmss" || inst.InstanceID != "7" {
		t.Fatalf("scale set %q instance %q", inst.ScaleSet, inst.InstanceID)
	}
	// Without a resource ID the name <scaleSet>_<id> still says which instance.
	noID := strings.Replace(scaleSet, `"resourceId"`, `"unused"`, 1)
	c, _ = server(t, noID)
	if inst, err = c.Instance(ctx(t)); err != nil || inst.InstanceID != "7" {
		t.Fatalf("from the name: %q, %v", inst.InstanceID, err)
	}
}

func TestTransientFailuresAreRetried(t *testing.T) {
	c, calls := server(t, standalone, 500, 429, 410, 200)
	if _, err := c.Instance(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 4 {
		t.Fatalf("%d calls, want 4 (three transient failures, then the answer)", calls.Load())
	}
}

func TestBadAnswersFailClearly(t *testing.T) {
	for _, tc := range []struct {
		name      string
		body      string
		statuses  []int
		wantCalls int32
		want      string
	}{
		{name: "404 is not retried", statuses: []int{404}, wantCalls: 1, want: "404"},
		{name: "garbage JSON is not retried", body: "<html>proxy login</html>", wantCalls: 1, want: "not instance metadata JSON"},
		{name: "persistent 503 gives up after the attempts", statuses: []int{503}, wantCalls: 4, want: "after 4 attempts"},
		{name: "missing fields are named", body: `{"compute":{"name":"vm1"},"network":{"interface":[{"macAddress":"zz"}]}}`, wantCalls: 1,
			want: "missing compute.resourceGroupName, compute.subscriptionId, network.interface[0].macAddress"},
		{name: "no interface", body: `{"compute":{"subscriptionId":"s","resourceGroupName":"r","name":"vm1"},"network":{}}`, wantCalls: 1,
			want: "missing network.interface"},
		{name: "scale set without instance", body: `{"compute":{"subscriptionId":"s","resourceGroupName":"r","name":"vm1","vmScaleSetName":"ss"},
			"network":{"interface":[{"macAddress":"000D3AF806EC"}]}}`, wantCalls: 1, want: "scale-set instance ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, calls := server(t, tc.body, tc.statuses...)
			_, err := c.Instance(ctx(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "IMDS") {
				t.Fatalf("error %v, want one naming IMDS and %q", err, tc.want)
			}
			if calls.Load() != tc.wantCalls {
				t.Fatalf("%d calls, want %d", calls.Load(), tc.wantCalls)
			}
		})
	}
}

func TestUnreachableIMDSEndsWithTheContext(t *testing.T) {
	c := &imds.Client{Endpoint: "http://127.0.0.1:1", BackoffMin: time.Millisecond, Attempts: 1000}
	cx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := c.Instance(cx); err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("error %v, want the deadline", err)
	}
}

func TestMACFormats(t *testing.T) {
	for _, s := range []string{"000D3AF806EC", "00-0D-3A-F8-06-EC", "00:0d:3a:f8:06:ec"} {
		if m, err := imds.ParseMAC(s); err != nil || m.String() != "00:0d:3a:f8:06:ec" {
			t.Errorf("%s: %v %v", s, m, err)
		}
	}
	if _, err := imds.ParseMAC("0D3AF806EC"); err == nil {
		t.Error("a short MAC parsed")
	}
}
