package azure

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	azcloud "github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// Credential builds the token credential cfg.Auth names. Managed identity is azidentity's
// ManagedIdentityCredential as it ships: it asks IMDS (169.254.169.254) for tokens.
func Credential(cfg Config) (azcore.TokenCredential, error) {
	switch cfg.Auth {
	case AuthManagedIdentity:
		o := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: cfg.Identity}
		if cfg.ClientID != "" {
			o.ID = azidentity.ClientID(cfg.ClientID)
		}
		c, err := azidentity.NewManagedIdentityCredential(o)
		if err != nil {
			return nil, fmt.Errorf("managed identity credential: %w", err)
		}
		return c, nil
	case AuthDefault, "":
		c, err := azidentity.NewDefaultAzureCredential(nil)
		if err != nil {
			return nil, fmt.Errorf("default credential chain: %w", err)
		}
		return c, nil
	case AuthStatic:
		if cfg.StaticToken == "" {
			return nil, errors.New("auth static needs a token")
		}
		return staticToken(cfg.StaticToken), nil
	}
	return nil, fmt.Errorf("auth %q: want %s, %s or %s", cfg.Auth, AuthManagedIdentity, AuthDefault, AuthStatic)
}

type staticToken string

func (t staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(t), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// Scope is the token scope of the ARM endpoint cfg names.
func Scope(cfg Config) string {
	if cfg.Endpoint == "" {
		return azcloud.AzurePublic.Services[azcloud.ResourceManager].Audience + "/.default"
	}
	return cfg.Endpoint + "/.default"
}

// CheckToken gets one token for ARM, so a credential that cannot work (no identity on the
// VM, IMDS failing) stops cns at start with the credential's own words rather than at the
// first pool write. The managed identity credential retries IMDS itself.
func CheckToken(ctx context.Context, cfg Config, cred azcore.TokenCredential) error {
	if _, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{Scope(cfg)}}); err != nil {
		return fmt.Errorf("token for ARM (auth %s): %w", cfg.Auth, err)
	}
	return nil
}

// armOptions are the ARM client options every client of cns uses, and the polling of its
// long-running writes.
func armOptions(cfg Config) (*arm.ClientOptions, pollPolicy, error) {
	opts := &arm.ClientOptions{DisableRPRegistration: true}
	// azcore retries quick failures itself; a Retry-After beyond 2 s makes it return at once,
	// leaving the wait to cns's own jittered backoff, which never blocks a request.
	opts.Retry = policy.RetryOptions{MaxRetries: 2, RetryDelay: 200 * time.Millisecond,
		MaxRetryDelay: 2 * time.Second, TryTimeout: 30 * time.Second}
	opts.Telemetry.ApplicationID = "vnet-cni-cns"
	opts.Transport = cfg.Transport
	poll := pollPolicy{interval: cmp.Or(cfg.PollInterval, DefaultPollInterval), fast: cfg.FastPoll}
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || u.Host == "" {
			return nil, poll, fmt.Errorf("ARM endpoint %q: not a URL", cfg.Endpoint)
		}
		opts.Cloud = azcloud.Configuration{
			ActiveDirectoryAuthorityHost: azcloud.AzurePublic.ActiveDirectoryAuthorityHost,
			Services: map[azcloud.ServiceName]azcloud.ServiceConfiguration{
				azcloud.ResourceManager: {Endpoint: cfg.Endpoint, Audience: cfg.Endpoint},
			},
		}
		// A plain-HTTP endpoint is only ever a local mockarm (inside the emulated VNet or on
		// loopback); the bearer-token policy refuses plain HTTP unless told.
		opts.InsecureAllowCredentialWithHTTP = u.Scheme == "http"
		poll.fast = poll.fast || u.Scheme == "http"
	}
	return opts, poll, nil
}
