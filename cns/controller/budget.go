package controller

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/vnet-cni/vnet-cni/cns/cloud/azure"
)

// Budget is the cluster-wide ARM write budget: a token bucket shaped like ARM's own
// (Azure: 200 writes, refilled at 10/s, per subscription, region and principal), so that the
// controller queues writes instead of earning 429s. It also follows what ARM says: a 429's
// Retry-After stops every write until then, and x-ms-ratelimit-remaining-subscription-writes
// drains the local bucket when ARM counts fewer writes left (other writers share the quota).
type Budget struct {
	lim *rate.Limiter

	mu          sync.Mutex
	pausedUntil time.Time
}

// NewBudget returns a budget of burst writes refilled at perSecond.
func NewBudget(burst int, perSecond float64) *Budget {
	return &Budget{lim: rate.NewLimiter(rate.Limit(perSecond), burst)}
}

// Wait blocks until one write may be issued and takes its token; it returns how long it waited.
// A pause that starts while it waits for the token (a 429 elsewhere) is waited out too.
func (b *Budget) Wait(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	if err := b.WaitPause(ctx); err != nil {
		return time.Since(start), err
	}
	if err := b.lim.Wait(ctx); err != nil {
		return time.Since(start), fmt.Errorf("wait for the ARM write budget: %w", err)
	}
	err := b.WaitPause(ctx)
	return time.Since(start), err
}

// WaitPause blocks while writes are paused (a 429's Retry-After), taking no token: a write
// admitted earlier (a ticket) waits here before it goes.
func (b *Budget) WaitPause(ctx context.Context) error {
	for {
		b.mu.Lock()
		pause := time.Until(b.pausedUntil)
		b.mu.Unlock()
		if pause <= 0 {
			return nil
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("wait for the ARM write budget: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// PauseFor stops all writes for d (a 429's Retry-After).
func (b *Budget) PauseFor(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if until := time.Now().Add(d); until.After(b.pausedUntil) {
		b.pausedUntil = until
	}
}

// Remaining aligns the bucket with ARM's count of writes left: when ARM has fewer than the
// bucket holds, the difference is taken out.
func (b *Budget) Remaining(n int) {
	b.mu.Lock() // two answers at once must not both drain the same surplus
	defer b.mu.Unlock()
	now := time.Now()
	if extra := b.lim.TokensAt(now) - float64(n); extra >= 1 {
		b.lim.AllowN(now, int(math.Floor(extra)))
	}
}

type ticketKey struct{}

// WithTicket returns ctx carrying one write the budget has already admitted (the caller
// waited in Wait): the first write the Transport sees with it goes without waiting again.
// The wait belongs outside the SDK's pipeline, whose per-try timeout would otherwise cut a
// long queue for the budget short; the SDK's own retries of that write wait as usual.
func WithTicket(ctx context.Context) context.Context {
	return context.WithValue(ctx, ticketKey{}, new(atomic.Bool))
}

func takeTicket(ctx context.Context) bool {
	t, _ := ctx.Value(ticketKey{}).(*atomic.Bool)
	return t != nil && t.CompareAndSwap(false, true)
}

// Tokens is how many writes may go now (for metrics and tests).
func (b *Budget) Tokens() float64 { return b.lim.Tokens() }

// Transport is an http.RoundTripper (and azcore policy.Transporter) that passes every ARM
// write through the budget and feeds ARM's answers back into it. Reads are not limited: ARM
// counts them in a separate, far larger bucket.
type Transport struct {
	Budget *Budget
	Next   http.RoundTripper
	// Waited, if set, is told how long each write waited for the budget.
	Waited func(time.Duration)
	// Throttled, if set, is told of each 429 and its Retry-After.
	Throttled func(time.Duration)
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	write := req.Method == http.MethodPut || req.Method == http.MethodPatch || req.Method == http.MethodDelete || req.Method == http.MethodPost
	switch {
	case write && takeTicket(req.Context()): // admitted already, but a 429 since then still holds it back
		if err := t.Budget.WaitPause(req.Context()); err != nil {
			return nil, err
		}
	case write:
		w, err := t.Budget.Wait(req.Context())
		if t.Waited != nil {
			t.Waited(w)
		}
		if err != nil {
			return nil, err
		}
	}
	resp, err := t.Next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	if n, err := strconv.Atoi(resp.Header.Get("x-ms-ratelimit-remaining-subscription-writes")); err == nil {
		t.Budget.Remaining(n)
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		ra := azure.RetryAfter(resp.Header)
		if ra <= 0 {
			ra = time.Second
		}
		t.Budget.PauseFor(ra)
		if t.Throttled != nil {
			t.Throttled(ra)
		}
	}
	return resp, nil
}

// Do implements azcore's policy.Transporter.
func (t *Transport) Do(req *http.Request) (*http.Response, error) { return t.RoundTrip(req) }
