package plugin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// Defaults of the network configuration.
const (
	DefaultCNSSocket      = "/run/cns/cns.sock"
	DefaultReleaseSpool   = "/var/lib/cns/release-spool"
	DefaultRequestTimeout = 60 * time.Second
	DefaultMTU            = 1500
)

// Config is the plugin's entry in a conflist ("type": "vnet-cni").
type Config struct {
	types.PluginConf

	// CNSSocket is cns's unix socket.
	CNSSocket string `json:"cnsSocket,omitempty"`
	// MTU of the pod interface; 0 takes what cns reports, else 1500.
	MTU int `json:"mtu,omitempty"`
	// RequestTimeout bounds each call to cns, e.g. "30s". It should exceed cns's
	// --request-wait so cns, not the plugin, says why an address did not come.
	RequestTimeout Duration `json:"requestTimeout,omitempty"`
	// ReleaseSpool is where DEL leaves a release that cns could not take; cns replays it.
	ReleaseSpool string `json:"releaseSpool,omitempty"`

	// LegacyAttachments is the pre-1.1 spelling of cni.dev/valid-attachments that libcni
	// still sends beside it; used only when the new key is absent.
	LegacyAttachments []types.GCAttachment `json:"cni.dev/attachments,omitempty"`

	// Fields that runtimes and conventions add; accepted, not used.
	RuntimeConfig json.RawMessage `json:"runtimeConfig,omitempty"`
	Args          json.RawMessage `json:"args,omitempty"`
}

// Duration reads "30s"-style durations.
type Duration struct{ time.Duration }

// UnmarshalJSON parses a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string like \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v <= 0 {
		return fmt.Errorf("duration %q must be positive", s)
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// parseConfig decodes stdin strictly: an unknown field or a wrong type is an error that
// names the field. prevResult is parsed into the config's version.
func parseConfig(stdin []byte) (*Config, error) {
	c := &Config{}
	dec := json.NewDecoder(bytes.NewReader(stdin))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("%w: %w", errConfig, err)
	}
	if c.CNIVersion == "" {
		return nil, fmt.Errorf("%w: cniVersion is required", errConfig)
	}
	if c.Name == "" {
		return nil, fmt.Errorf("%w: name is required", errConfig)
	}
	if c.MTU < 0 || c.MTU > 65535 || (c.MTU > 0 && c.MTU < 576) {
		return nil, fmt.Errorf("%w: mtu %d: want 576..65535, or 0 for the VNet's", errConfig, c.MTU)
	}
	if c.CNSSocket == "" {
		c.CNSSocket = DefaultCNSSocket
	}
	if c.ReleaseSpool == "" {
		c.ReleaseSpool = DefaultReleaseSpool
	}
	if c.RequestTimeout.Duration == 0 {
		c.RequestTimeout.Duration = DefaultRequestTimeout
	}
	if c.ValidAttachments == nil {
		c.ValidAttachments = c.LegacyAttachments
	}
	if err := version.ParsePrevResult(&c.PluginConf); err != nil {
		return nil, fmt.Errorf("%w: prevResult: %w", errConfig, err)
	}
	return c, nil
}
