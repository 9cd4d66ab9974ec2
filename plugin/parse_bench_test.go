package plugin

import "testing"

// BenchmarkParseConfig prices the config parse every ADD/DEL pays (README, "Where ADD's and
// DEL's time goes").
func BenchmarkParseConfig(b *testing.B) {
	conf := []byte(`{"cniVersion":"1.1.0","name":"vnet","type":"vnet-cni","cnsSocket":"/run/cns/cns.sock",
		"releaseSpool":"/var/lib/cns/release-spool","requestTimeout":"60s"}`)
	for b.Loop() {
		if _, err := parseConfig(conf); err != nil {
			b.Fatal(err)
		}
	}
}
