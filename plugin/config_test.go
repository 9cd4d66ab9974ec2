package plugin

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzParseConfig: any stdin is either refused as invalid configuration (CNI code 7) or
// parsed into a config whose every field is usable; DEL's lenient parsing accepts every
// config ADD accepts, with the same network, socket and spool.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"vnet","type":"vnet-cni"}`))
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"vnet","type":"vnet-cni","mtu":1400,"requestTimeout":"5s","cnsSocket":"/s"}`))
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"vnet","type":"vnet-cni","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.5/32"}]}}`))
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"vnet","type":"vnet-cni","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`))
	f.Add([]byte(`{"mtu":"x"}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, stdin []byte) {
		c, err := parseConfig(stdin)
		d, derr := parseDelConfig(stdin)
		if derr != nil && !errors.Is(derr, errConfig) {
			t.Fatalf("DEL refusal %v does not map to code 7", derr)
		}
		if derr == nil && (d.Name == "" || d.CNSSocket == "" || d.ReleaseSpool == "" || d.RequestTimeout.Duration <= 0) {
			t.Fatalf("DEL accepted an unusable config: %+v", d)
		}
		if err == nil && (derr != nil || d.Name != c.Name || d.CNSSocket != c.CNSSocket || d.ReleaseSpool != c.ReleaseSpool) {
			t.Fatalf("ADD accepts %s but DEL reads %+v (%v)", stdin, d, derr)
		}
		if err != nil {
			if !errors.Is(err, errConfig) || toCNIError(err).Code != types.ErrInvalidNetworkConfig {
				t.Fatalf("refusal %v does not map to code 7", err)
			}
			return
		}
		if c.CNIVersion == "" || c.Name == "" || c.CNSSocket == "" || c.ReleaseSpool == "" || c.RequestTimeout.Duration <= 0 ||
			c.MTU < 0 || c.MTU > 65535 {
			t.Fatalf("accepted an unusable config: %+v", c)
		}
	})
}

// FuzzK8sArgs: CNI_ARGS either parse, giving back the pod name that was passed, or are
// refused as invalid environment (CNI code 4).
func FuzzK8sArgs(f *testing.F) {
	f.Add("default", "web-0", "")
	f.Add("ns", "p", "K8S_POD_NAME")
	f.Add("", "", "=;;=")
	f.Fuzz(func(t *testing.T, podNS, podName, extra string) {
		args := "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + podNS + ";K8S_POD_NAME=" + podName
		if extra != "" {
			args += ";" + extra
		}
		ka, err := parseK8sArgs(args)
		if err != nil {
			if toCNIError(err).Code != types.ErrInvalidEnvironmentVariables {
				t.Fatalf("refusal %v does not map to code 4", err)
			}
			return
		}
		if !strings.ContainsAny(podName+podNS+extra, ";=") && (string(ka.K8S_POD_NAME) != podName || string(ka.K8S_POD_NAMESPACE) != podNS) {
			t.Fatalf("parsed %q/%q from %q", ka.K8S_POD_NAMESPACE, ka.K8S_POD_NAME, args)
		}
	})
}
