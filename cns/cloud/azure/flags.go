package azure

import "flag"

// RegisterAccessFlags binds how cns and vnet-controller reach ARM: the endpoint and the
// credential (one set of names and defaults for both).
func (c *Config) RegisterAccessFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Endpoint, "arm-endpoint", c.Endpoint, "ARM endpoint; empty is Azure public cloud (http:// only for a local mockarm)")
	fs.StringVar(&c.Auth, "auth", c.Auth, "credential: managed-identity, default (azidentity chain) or static (mockarm)")
	fs.StringVar(&c.ClientID, "identity-client-id", c.ClientID, "client ID of a user-assigned managed identity")
	fs.StringVar(&c.StaticToken, "static-token", "mock", "bearer token for --auth static")
}
