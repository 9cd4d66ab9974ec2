package controller

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// armStub answers every request with status and the given headers, counting writes.
type armStub struct {
	writes    atomic.Int32
	status    int
	header    http.Header
	statusFor func(n int32) int
}

func (a *armStub) RoundTrip(req *http.Request) (*http.Response, error) {
	n := int32(0)
	if req.Method != http.MethodGet {
		n = a.writes.Add(1)
	}
	st := a.status
	if a.statusFor != nil {
		st = a.statusFor(n)
	}
	return &http.Response{StatusCode: st, Header: a.header.Clone(), Body: http.NoBody, Request: req}, nil
}

func put(t *testing.T, tr http.RoundTripper) time.Duration {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://arm/nic", nil)
	start := time.Now()
	if _, err := tr.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

func TestBudgetSpendsTheBurstThenTheRefillRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arm := &armStub{status: http.StatusOK}
		tr := &Transport{Budget: NewBudget(200, 10), Next: arm}
		start := time.Now()
		for range 200 {
			put(t, tr)
		}
		if d := time.Since(start); d != 0 {
			t.Fatalf("the first 200 writes waited %s; a full bucket lets them go at once", d)
		}
		for range 50 {
			put(t, tr)
		}
		if d := time.Since(start); d < 5*time.Second-time.Millisecond || d > 5*time.Second+time.Millisecond {
			t.Fatalf("250 writes took %s; want 5s (50 beyond the burst at 10/s)", d)
		}
		// Reads are not budgeted.
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://arm/nic", nil)
		before := time.Now()
		for range 100 {
			_, _ = tr.RoundTrip(req)
		}
		if time.Since(before) != 0 {
			t.Fatal("reads waited for the write budget")
		}
	})
}

func TestBudgetHonoursRetryAfterForEveryWriter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arm := &armStub{header: http.Header{"Retry-After": {"7"}}, statusFor: func(n int32) int {
			if n == 1 {
				return http.StatusTooManyRequests
			}
			return http.StatusOK
		}}
		var throttled atomic.Int32
		tr := &Transport{Budget: NewBudget(200, 10), Next: arm, Throttled: func(time.Duration) { throttled.Add(1) }}
		put(t, tr) // 429, Retry-After 7 s
		if d := put(t, tr); d != 7*time.Second {
			t.Fatalf("the next write waited %s after a 429 with Retry-After 7; want 7s", d)
		}
		if throttled.Load() != 1 {
			t.Fatalf("throttled callback ran %d times, want 1", throttled.Load())
		}
	})
}

func TestBudgetFollowsARMsRemainingWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Another writer in the subscription has spent most of the quota: ARM says 3 left.
		arm := &armStub{status: http.StatusOK, header: http.Header{"X-Ms-Ratelimit-Remaining-Subscription-Writes": {strconv.Itoa(3)}}}
		b := NewBudget(200, 10)
		tr := &Transport{Budget: b, Next: arm}
		put(t, tr)
		if got := b.Tokens(); got > 3 {
			t.Fatalf("after ARM reported 3 writes left the budget holds %.1f tokens; want at most 3", got)
		}
	})
}

func TestBudgetWaitEndsWithTheContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBudget(1, 0.001)
		if _, err := b.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := b.Wait(ctx); err == nil {
			t.Fatal("Wait on an empty budget returned without error before its deadline")
		}
	})
}

func TestATicketAdmitsOneWriteWithoutASecondWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arm := &armStub{status: http.StatusOK}
		b := NewBudget(1, 1)
		tr := &Transport{Budget: b, Next: arm}
		if _, err := b.Wait(t.Context()); err != nil { // the reconciler queues for the budget
			t.Fatal(err)
		}
		ctx := WithTicket(t.Context())
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://arm/nic", nil)
		start := time.Now()
		if _, err := tr.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 0 {
			t.Fatalf("the admitted write waited %s again", d)
		}
		// A retry of that write by the SDK is a write of its own: it waits for the next token.
		req, _ = http.NewRequestWithContext(ctx, http.MethodPut, "http://arm/nic", nil)
		start = time.Now()
		if _, err := tr.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != time.Second {
			t.Fatalf("the retry waited %s, want the 1 s refill", d)
		}
	})
}

// A 429 that arrives after a write was admitted (its Wait returned) still holds that write
// back until the Retry-After is over.
func TestATicketedWriteHonoursAPauseSetAfterItsWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arm := &armStub{status: http.StatusOK}
		b := NewBudget(10, 10)
		tr := &Transport{Budget: b, Next: arm}
		if _, err := b.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		b.PauseFor(5 * time.Second) // another node's write got a 429 meanwhile
		req, _ := http.NewRequestWithContext(WithTicket(t.Context()), http.MethodPut, "http://arm/nic", nil)
		start := time.Now()
		if _, err := tr.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 5*time.Second {
			t.Fatalf("the admitted write went after %s during a 5 s pause", d)
		}
	})
}
