package cns

import (
	"flag"
	"slices"
	"testing"
	"time"
)

func TestFlagsFromEnvFillOnlyUnsetFlags(t *testing.T) {
	fs := flag.NewFlagSet("cns", flag.ContinueOnError)
	c := DefaultConfig()
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"--cooldown=3s"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"CNS_ARM_ENDPOINT": "http://10.0.0.1:80", "CNS_COOLDOWN": "9s", "CNS_RELEASE_DELAY": "1s"}
	if err := FlagsFromEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if c.Azure.Endpoint != "http://10.0.0.1:80" || c.Pool.Limits.ReleaseDelay != time.Second {
		t.Errorf("env not applied: endpoint %q release-delay %s", c.Azure.Endpoint, c.Pool.Limits.ReleaseDelay)
	}
	if c.Pool.Limits.Cooldown != 3*time.Second {
		t.Errorf("command line lost to env: cooldown %s", c.Pool.Limits.Cooldown)
	}
	bad := func(k string) (string, bool) { return "soon", k == "CNS_COOLDOWN" }
	if err := FlagsFromEnv(flag.NewFlagSet("x", flag.ContinueOnError), bad); err != nil {
		t.Fatal(err)
	}
	fs2 := flag.NewFlagSet("cns", flag.ContinueOnError)
	c.RegisterFlags(fs2)
	if err := FlagsFromEnv(fs2, bad); err == nil {
		t.Error("a bad CNS_COOLDOWN was accepted")
	}
}

func TestUnknownFlagEnvNamesMisspelledKeysOnly(t *testing.T) {
	fs := flag.NewFlagSet("cns", flag.ContinueOnError)
	c := DefaultConfig()
	c.RegisterFlags(fs)
	got := UnknownFlagEnv(fs, []string{"CNS_COOLDOWN=1s", "CNS_COOLDWN=1s", "PATH=/bin", "CNS_SERVICE_HOST=10.0.0.1", "XCNS_A=1"})
	if want := []string{"CNS_COOLDWN", "CNS_SERVICE_HOST"}; !slices.Equal(got, want) {
		t.Errorf("UnknownFlagEnv = %v, want %v", got, want)
	}
}

func TestNonMasqueradeCIDRsFlag(t *testing.T) {
	fs := flag.NewFlagSet("cns", flag.ContinueOnError)
	c := DefaultConfig()
	c.RegisterFlags(fs)
	if c.IPMasq {
		t.Error("--ip-masq is on by default: cns outside a node namespace would change its host's netfilter")
	}
	if err := fs.Parse([]string{"--ip-masq", "--non-masquerade-cidrs=10.0.0.0/8, 192.168.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	if !c.IPMasq || len(c.NonMasqCIDRs) != 2 || c.NonMasqCIDRs[1].String() != "192.168.0.0/16" {
		t.Errorf("ip-masq %v, CIDRs %v", c.IPMasq, c.NonMasqCIDRs)
	}
	for _, bad := range []string{"10.0.0.0", "fd00::/8"} {
		if err := fs.Set("non-masquerade-cidrs", bad); err == nil {
			t.Errorf("--non-masquerade-cidrs %s accepted", bad)
		}
	}
}
