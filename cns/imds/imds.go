package imds

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// Endpoint is the link-local address every Azure VM reaches IMDS on.
const Endpoint = "http://169.254.169.254"

// APIVersion is the instance metadata API version asked for.
const APIVersion = "2021-02-01"

// Instance is what IMDS says about this VM.
type Instance struct {
	SubscriptionID string
	ResourceGroup  string
	Name           string // VM name; for a uniform scale-set VM, "<scaleSet>_<instanceID>"
	ResourceID     string
	Location       string
	ScaleSet       string // empty for a standalone VM
	InstanceID     string // scale-set instance ID; empty for a standalone VM
	MAC            net.HardwareAddr
	Addresses      []netip.Addr // the primary interface's private IPv4 addresses, primary first
}

// Client reads IMDS. The zero value reads the real service.
type Client struct {
	Endpoint   string        // default Endpoint
	HTTP       *http.Client  // default: no proxy (IMDS must never go through one), 5 s per try
	Attempts   int           // tries for retryable answers; default 6
	BackoffMin time.Duration // first retry delay, doubled each time with jitter; default 500 ms
	BackoffMax time.Duration // default 8 s
}

// Error is an IMDS answer cns cannot use.
type Error struct {
	Status int // HTTP status, 0 for a transport or parse failure
	Err    error
}

func (e *Error) Error() string { return "instance metadata (IMDS): " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// retryable is what IMDS's documentation says to retry: throttling, 410 while the VM boots,
// server errors and failures to connect.
func (e *Error) retryable() bool {
	return e.Status == 0 && !errors.Is(e.Err, errParse) || e.Status == http.StatusTooManyRequests ||
		e.Status == http.StatusGone || e.Status >= 500
}

var errParse = errors.New("unparseable answer")

// Instance reads the instance metadata, retrying transient failures with jittered
// exponential backoff until the attempts or ctx run out.
func (c *Client) Instance(ctx context.Context) (Instance, error) {
	delay := cmp.Or(c.BackoffMin, 500*time.Millisecond)
	attempts := cmp.Or(c.Attempts, 6)
	for i := 1; ; i++ {
		inst, err := c.instanceOnce(ctx)
		var ie *Error
		if err == nil || !errors.As(err, &ie) || !ie.retryable() || i >= attempts {
			if err != nil && i > 1 {
				err = fmt.Errorf("after %d attempts: %w", i, err)
			}
			return inst, err
		}
		wait := delay/2 + rand.N(delay/2+1)
		delay = min(delay*2, cmp.Or(c.BackoffMax, 8*time.Second))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Instance{}, fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil,
		DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext}}
}

func (c *Client) instanceOnce(ctx context.Context) (Instance, error) {
	url := cmp.Or(c.Endpoint, Endpoint) + "/metadata/instance?api-version=" + APIVersion
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Instance{}, &Error{Err: err}
	}
	req.Header.Set("Metadata", "true")
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return Instance{}, &Error{Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Instance{}, &Error{Err: fmt.Errorf("read answer: %w", err)}
	}
	if resp.StatusCode != http.StatusOK {
		return Instance{}, &Error{Status: resp.StatusCode, Err: fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))}
	}
	inst, err := parse(body)
	if err != nil {
		return Instance{}, &Error{Err: fmt.Errorf("%w: %w", errParse, err)}
	}
	return inst, nil
}
