package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/vnet-cni/vnet-cni/test/nettest"
)

// The same failover with real vnet-controller processes: the leader is SIGKILLed while nodes
// take pods, the standby takes the Lease within the lease duration (plus client-go's retry
// period), no NIC write is issued twice (no 412 from a second writer, no NIC holding more than
// its node asked for) and no node loses an address.
func TestLeaderProcessKilledStandbyProcessTakesOver(t *testing.T) {
	bin := ControllerBin(t)
	e := newEnv(t, 300*time.Millisecond)
	cfg := e.mock.ControllerConfig()
	kc := e.api.Kubeconfig(t)
	holder := func() string { return leaseHolder(e) }
	leader := StartControllerProc(t, bin, kc, e.mock, "leader")
	first := WaitLeader(t, time.Minute, holder, leader)
	metricsAddr := nettest.FreeLoopbackAddr(t)
	standby := StartControllerProc(t, bin, kc, e.mock, "standby", "--metrics-listen", metricsAddr)
	nodes := e.nodes(t, 6)
	for _, n := range nodes {
		poll(t, time.Minute, n.Name+" warm", func() bool { return warm(n) })
	}
	wait := podsDuringFailover(t, e, nodes)
	poll(t, time.Minute, "writes under way", func() bool { return e.mock.Stats().Writes > 6+3 })
	leader.Kill()
	killed := time.Now()
	bound := cfg.LeaseDuration + 2*cfg.RetryPeriod
	for holder() == first || holder() == "" {
		if !standby.Alive() {
			t.Fatalf("the standby exited; its log:\n%s", standby.Tail(40))
		}
		if time.Since(killed) > bound+10*time.Second {
			t.Fatalf("the standby did not take the Lease %s after the leader was killed; its log:\n%s", time.Since(killed), standby.Tail(40))
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(killed)
	t.Logf("standby process took the Lease %s after the leader was killed (lease %s, retry period %s)", took.Round(time.Millisecond), cfg.LeaseDuration, cfg.RetryPeriod)
	if took > bound+2*time.Second { // room for a loaded machine; client-go's bound is lease + jittered retry
		t.Errorf("takeover took %s, want within the lease duration plus the retry period (%s)", took, bound)
	}
	noWriteTwiceNoAddressLost(t, e, nodes, wait())
	// The operator's view of the new leader: its Prometheus endpoint.
	body := scrape(t, "http://"+metricsAddr+"/metrics")
	for _, want := range []string{
		`workqueue_depth{controller="nodenetworkconfig",name="nodenetworkconfig"`,
		`vnet_controller_arm_writes_total{result="ok"}`,
		`vnet_controller_arm_throttled_total 0`,
		`vnet_controller_write_budget_tokens`,
		`vnet_controller_write_budget_wait_seconds_count`,
		`vnet_controller_spec_to_status_seconds_count`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the leader's /metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("vnet_controller series:\n%s", grepLines(body, "vnet_controller_", "workqueue_depth"))
	}
}
