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
	if c.MTU < 0 || c.MTU > 65535 || (c.MTU > 0 && c.MTU < 576) {
		return nil, fmt.Errorf("%w: mtu %d: want 576..65535, or 0 for the VNet's", errConfig, c.MTU)
	}
	if err := c.complete(); err != nil {
		return nil, err
	}
	if err := version.ParsePrevResult(&c.PluginConf); err != nil {
		return nil, fmt.Errorf("%w: prevResult: %w", errConfig, err)
	}
	return c, nil
}

// parseDelConfig decodes stdin for DEL, leniently: unknown fields (a conflist upgraded, or
// downgraded, between ADD and DEL), an out-of-range MTU and an unreadable prevResult are
// ignored, since DEL uses none of them. Only what DEL needs must be readable: the network
// name, the cns socket, the spool and the timeout.
func parseDelConfig(stdin []byte) (*Config, error) {
	// A Decoder, as ADD's parsing uses, so both read the same first JSON value.
	var c Config
	if err := json.NewDecoder(bytes.NewReader(stdin)).Decode(&c); err != nil {
		// A field of ours with a wrong type: fall back to the fields every config has, so
		// the defaults (socket, spool) still let DEL release the address.
		var base struct {
			types.NetConf
			CNSSocket    string `json:"cnsSocket"`
			ReleaseSpool string `json:"releaseSpool"`
		}
		if berr := json.NewDecoder(bytes.NewReader(stdin)).Decode(&base); berr != nil {
			return nil, fmt.Errorf("%w: %w", errConfig, err)
		}
		c = Config{PluginConf: types.PluginConf{CNIVersion: base.CNIVersion, Name: base.Name, Type: base.Type},
			CNSSocket: base.CNSSocket, ReleaseSpool: base.ReleaseSpool}
	}
	c.PrevResult, c.RawPrevResult = nil, nil
	if err := c.complete(); err != nil {
		return nil, err
	}
	return &c, nil
}

// complete checks the required fields and fills the defaults.
func (c *Config) complete() error {
	if c.CNIVersion == "" {
		return fmt.Errorf("%w: cniVersion is required", errConfig)
	}
	if c.Name == "" {
		return fmt.Errorf("%w: name is required", errConfig)
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
	return nil
}
