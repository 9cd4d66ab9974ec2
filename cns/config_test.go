package cns

import (
	"flag"
	"strings"
	"testing"
)

func TestConfigValidatesTheDemandWindow(t *testing.T) {
	for _, c := range []struct {
		args []string
		bad  bool
	}{
		{nil, false},
		{[]string{"--demand-settle", "300ms"}, false},
		{[]string{"--demand-settle", "2s"}, true}, // longer than the default hold
		{[]string{"--demand-settle", "2s", "--demand-hold", "3s"}, false},
		{[]string{"--demand-settle", "0s"}, true},
	} {
		cfg := DefaultConfig()
		fs := flag.NewFlagSet("cns", flag.ContinueOnError)
		cfg.RegisterFlags(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		err := cfg.Validate()
		if bad := err != nil && strings.Contains(err.Error(), "--demand-"); bad != c.bad {
			t.Errorf("%v: Validate() = %v, want a demand window error %v", c.args, err, c.bad)
		}
	}
}
