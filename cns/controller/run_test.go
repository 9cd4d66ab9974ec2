package controller

import "testing"

func TestConfigRefusesMaxIPsAboveTheNICLimit(t *testing.T) {
	for _, tc := range []struct {
		maxIPs int
		ok     bool
	}{{250, true}, {255, true}, {256, false}, {0, false}} {
		c := DefaultConfig()
		c.MaxIPs = tc.maxIPs
		if err := c.Validate(); (err == nil) != tc.ok {
			t.Errorf("--max-ips %d: Validate() = %v, want ok %v", tc.maxIPs, err, tc.ok)
		}
	}
}
