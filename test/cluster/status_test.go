package cluster

import (
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/vnet-cni/vnet-cni/cns/api/v1alpha1"
	"github.com/vnet-cni/vnet-cni/test/mockarm"
	"github.com/vnet-cni/vnet-cni/test/stack"
)

func TestANodeWithoutAnAzureProviderIDIsReportedNotWritten(t *testing.T) {
	e := newEnv(t, 0)
	ctl := StartController(t, e.api.Config, e.mock.ControllerConfig(), stack.Quiet(t))
	<-ctl.Elected
	if err := e.c.Create(e.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bare"}, Spec: corev1.NodeSpec{ProviderID: "aws:///us-east-1a/i-1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := CRDNIC(e.ctx, e.cc, e.cache, "bare"); err != nil {
		t.Fatal(err)
	}
	writes := e.mock.Stats().Writes
	o := e.applied(t, "bare", e.spec(t, "bare", 4))
	c := meta.FindStatusCondition(o.Status.Conditions, v1.ConditionReady)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1.ReasonNICNotFound || !strings.Contains(o.Status.LastError, "provider ID") {
		t.Fatalf("Ready %+v, last error %q; want False/%s naming the provider ID", c, o.Status.LastError, v1.ReasonNICNotFound)
	}
	if w := e.mock.Stats().Writes - writes; w != 0 {
		t.Fatalf("%d ARM writes for a node whose VM is unknown", w)
	}
	// The operator sees why in kubectl get's LAST ERROR column.
	out, _, err := e.api.env.ControlPlane.KubeCtl().Run("get", "nnc", "bare")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(out)
	if !strings.Contains(string(b), "LAST ERROR") || !strings.Contains(string(b), "provider ID") || !strings.Contains(string(b), "False") {
		t.Fatalf("kubectl get nnc bare shows no last error or Ready False:\n%s", b)
	}
}

// A Node the cloud controller manager has not given a provider ID yet waits, unanswered; one
// whose provider ID names another node's VM is refused and never written.
func TestANodeWithoutAProviderIDWaitsAndOneNamingAnotherVMIsRefused(t *testing.T) {
	e := newEnv(t, 0)
	ctl := StartController(t, e.api.Config, e.mock.ControllerConfig(), stack.Quiet(t))
	<-ctl.Elected
	e.bareNode(t, "n1")
	mc := mockarm.DefaultConfig()
	for name, pid := range map[string]string{"early": "", "spoof": "azure://" + mockarm.VMID(mc.Subscription, mc.ResourceGroup, "n1")} {
		if err := e.c.Create(e.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{ProviderID: pid}}); err != nil {
			t.Fatal(err)
		}
		if _, err := CRDNIC(e.ctx, e.cc, e.cache, name); err != nil {
			t.Fatal(err)
		}
	}
	writes := e.mock.Stats().Writes
	o := e.applied(t, "spoof", e.spec(t, "spoof", 4))
	if c := meta.FindStatusCondition(o.Status.Conditions, v1.ConditionReady); c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1.ReasonNICClaimed {
		t.Fatalf("spoof: Ready %+v; want False/%s", c, v1.ReasonNICClaimed)
	}
	gen := e.spec(t, "early", 4)
	deadline := time.Now().Add(time.Minute)
	for {
		o := e.nnc(t, "early")
		c := meta.FindStatusCondition(o.Status.Conditions, v1.ConditionReady)
		if c != nil && c.Reason == v1.ReasonProviderIDNotSet {
			if o.Status.ObservedGeneration >= gen {
				t.Fatalf("early: generation %d answered without a provider ID", gen)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("early: no %s within a minute: %+v", v1.ReasonProviderIDNotSet, o.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if w := e.mock.Stats().Writes - writes; w != 0 {
		t.Fatalf("%d ARM writes for nodes without a VM of their own", w)
	}
	if a := e.mock.NodeNICAddrs("n1"); len(a) != 0 {
		t.Fatalf("n1's NIC got %v from another node's spec", a)
	}
}

func TestStatusNamesEveryConfigurationAndForeignOnesCountButAreNeverTouched(t *testing.T) {
	e := newEnv(t, 0)
	cfg := e.mock.ControllerConfig()
	cfg.MaxIPs = 8
	ctl := StartController(t, e.api.Config, cfg, stack.Quiet(t))
	<-ctl.Elected
	e.bareNode(t, "n1")
	mc := mockarm.DefaultConfig()
	web, err := e.mock.AddIPConfig(mc.Subscription, mc.ResourceGroup, "n1-nic", "web", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	v6 := netip.MustParseAddr("fd00::7")
	if _, err := e.mock.AddIPConfig(mc.Subscription, mc.ResourceGroup, "n1-nic", "web-v6", v6); err != nil {
		t.Fatal(err)
	}
	// The node asks for all 8; two of the 8 are taken by the operator's configurations.
	o := e.applied(t, "n1", e.spec(t, "n1", 8))
	if len(o.Status.IPConfigurations) != 6 {
		t.Fatalf("status lists %d own configurations, want 6 (max 8 minus 2 foreign): %+v", len(o.Status.IPConfigurations), o.Status.IPConfigurations)
	}
	for _, ipc := range o.Status.IPConfigurations {
		if !strings.HasPrefix(ipc.Name, "cns-") || netip.MustParseAddr(ipc.Address) == web {
			t.Errorf("own configuration %+v: want a cns- name and not the foreign address", ipc)
		}
	}
	want := []v1.ForeignIPConfiguration{{Name: "web", Address: web.String()}, {Name: "web-v6", Address: v6.String()}}
	slices.SortFunc(o.Status.ForeignIPConfigurations, func(a, b v1.ForeignIPConfiguration) int { return strings.Compare(a.Name, b.Name) })
	if !slices.Equal(o.Status.ForeignIPConfigurations, want) {
		t.Fatalf("foreign configurations %+v, want %+v", o.Status.ForeignIPConfigurations, want)
	}
	// Releasing the foreign address (a confused node) and one own address removes only the own one.
	own := o.Status.IPConfigurations[0].Address
	o = e.applied(t, "n1", e.spec(t, "n1", 5, own, web.String()))
	held := e.nicAddrs("n1")
	if _, ok := slices.BinarySearchFunc(held, web, netip.Addr.Compare); !ok {
		t.Fatalf("the foreign address %s left the NIC: %v", web, held)
	}
	if len(o.Status.IPConfigurations) != 5 || len(o.Status.ForeignIPConfigurations) != 2 {
		t.Fatalf("after releasing %s: %d own, %d foreign configurations; want 5 and 2", own, len(o.Status.IPConfigurations), len(o.Status.ForeignIPConfigurations))
	}
}

func TestAnOutOfBandChangeReachesTheStatusByThePeriodicReread(t *testing.T) {
	e := newEnv(t, 0)
	cfg := e.mock.ControllerConfig()
	cfg.ResyncPeriod, cfg.ResyncReads = time.Second, 100
	ctl := StartController(t, e.api.Config, cfg, stack.Quiet(t))
	<-ctl.Elected
	e.bareNode(t, "n1")
	o := e.applied(t, "n1", e.spec(t, "n1", 4))
	writes := e.mock.Stats().Writes
	mc := mockarm.DefaultConfig()
	web, err := e.mock.AddIPConfig(mc.Subscription, mc.ResourceGroup, "n1-nic", "web", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	// No spec change: only the re-read (about once a second here) can see it.
	poll(t, 30*time.Second, "the operator's configuration in the status", func() bool {
		o = e.nnc(t, "n1")
		return len(o.Status.ForeignIPConfigurations) == 1 && o.Status.ForeignIPConfigurations[0].Address == web.String()
	})
	if w := e.mock.Stats().Writes - writes; w != 0 {
		t.Fatalf("%d ARM writes after an out-of-band change; a drift read only reports", w)
	}
	if got := metric(t, ctl, "vnet_controller_drift_detected_total", nil); got < 1 {
		t.Fatalf("vnet_controller_drift_detected_total = %v, want ≥ 1", got)
	}
}
