package ipampool

import (
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	l := DefaultLimits() // batch 16, min 8, max 24, 250 IPs
	tests := []struct {
		name    string
		c       Counts
		waiters int
		foreign int
		keep    bool
		want    Decision
	}{
		{name: "empty pool grows one batch", c: Counts{}, want: Decision{Add: 16}},
		{name: "at min free does nothing", c: Counts{Available: 8, Assigned: 8}, want: Decision{}},
		{name: "one below min free grows a batch", c: Counts{Available: 7, Assigned: 9}, want: Decision{Add: 16}},
		{name: "at max free does nothing", c: Counts{Available: 24}, want: Decision{}},
		{name: "above max free releases the excess", c: Counts{Available: 30, Assigned: 2}, want: Decision{Release: 6}},
		{name: "cooldown is not free and not released", c: Counts{Available: 10, Cooldown: 40}, want: Decision{}},
		{name: "waiters block release", c: Counts{Available: 30}, waiters: 1, want: Decision{}},
		{name: "waiters on empty pool get one write for all plus buffer",
			c: Counts{Assigned: 8}, waiters: 200, want: Decision{Add: 208}},
		{name: "demand rounds up to the batch", c: Counts{Available: 0}, waiters: 9, want: Decision{Add: 32}},
		{name: "growth is capped by max IPs",
			c: Counts{Assigned: 240}, waiters: 20, want: Decision{Add: 10, AtLimit: true}},
		{name: "cap counts cooldown; queued releases are cancelled before anything is added",
			c: Counts{Assigned: 200, Cooldown: 40, PendingRelease: 5}, want: Decision{Add: 5, Cancel: 5}},
		{name: "waiters cancel queued releases instead of a write",
			c: Counts{Assigned: 10, PendingRelease: 20}, waiters: 3, want: Decision{Cancel: 11}},
		{name: "releases that may not be cancelled free their room in the same write",
			c: Counts{Assigned: 240, PendingRelease: 2}, waiters: 12, foreign: 4, keep: true, want: Decision{Add: 6, AtLimit: true}},
		{name: "foreign ip configurations take room under max IPs",
			c: Counts{Assigned: 240}, foreign: 6, want: Decision{Add: 4, AtLimit: true}},
		{name: "foreign ip configurations can leave no room at all",
			c: Counts{Assigned: 245}, waiters: 1, foreign: 5, want: Decision{AtLimit: true}},
		{name: "full NIC with waiters is at limit",
			c: Counts{Assigned: 250}, waiters: 3, want: Decision{Add: 0, AtLimit: true}},
		{name: "full NIC without waiters still reports the limit",
			c: Counts{Assigned: 250}, want: Decision{Add: 0, AtLimit: true}},
		{name: "rounding that exceeds the room is trimmed without being at limit",
			c: Counts{Assigned: 236}, want: Decision{Add: 14}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Decide(Input{Counts: tc.c, Waiters: tc.waiters, Foreign: tc.foreign, KeepReleases: tc.keep, Limits: l})
			if got != tc.want {
				t.Errorf("Decide(%+v, waiters=%d, foreign=%d) = %+v, want %+v", tc.c, tc.waiters, tc.foreign, got, tc.want)
			}
		})
	}
}

func TestDecideNeverOversteps(t *testing.T) {
	// Property over a grid: growth never takes the NIC (foreign configurations included)
	// over MaxIPs once the queued releases left, release never goes below the high watermark,
	// one decision never both adds and releases, and never cancels more than is queued.
	l := Limits{BatchSize: 4, MinFree: 3, MaxFree: 7, MaxIPs: 20}
	for av := 0; av <= 20; av++ {
		for as := 0; as+av <= 20; as++ {
			for pr := 0; pr+as+av <= 20; pr += 3 {
				for fo := 0; fo+pr+as+av <= 20; fo += 4 {
					for w := 0; w <= 25; w += 5 {
						c := Counts{Available: av, Assigned: as, PendingRelease: pr}
						d := Decide(Input{Counts: c, Waiters: w, Foreign: fo, KeepReleases: w%10 == 5, Limits: l})
						if d.Add > 0 && d.Release > 0 {
							t.Fatalf("%+v w=%d: both add and release: %+v", c, w, d)
						}
						if d.Cancel > pr || d.Cancel < 0 {
							t.Fatalf("%+v w=%d: cancels %d of %d queued releases", c, w, d.Cancel, pr)
						}
						if c.Total()-(pr-d.Cancel)+fo+d.Add > l.MaxIPs {
							t.Fatalf("%+v w=%d foreign=%d: add %d exceeds max IPs", c, w, fo, d.Add)
						}
						if d.Release > 0 && av-d.Release < l.MaxFree {
							t.Fatalf("%+v w=%d: release %d goes below max free", c, w, d.Release)
						}
						if !d.AtLimit && av+d.Cancel+d.Add < w+l.MinFree {
							t.Fatalf("%+v w=%d: %+v does not cover demand", c, w, d)
						}
					}
				}
			}
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Limits)
		wantErr string
	}{
		{name: "defaults are valid", mutate: func(*Limits) {}},
		{name: "zero batch", mutate: func(l *Limits) { l.BatchSize = 0 }, wantErr: "batch size"},
		{name: "negative min free", mutate: func(l *Limits) { l.MinFree = -1 }, wantErr: "min free"},
		{name: "max below min", mutate: func(l *Limits) { l.MaxFree = 2 }, wantErr: "max free 2"},
		{name: "max IPs above NIC limit", mutate: func(l *Limits) { l.MaxIPs = 256 }, wantErr: "max IPs 256"},
		{name: "negative cooldown", mutate: func(l *Limits) { l.Cooldown = -1 }, wantErr: "cooldown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := DefaultLimits()
			tc.mutate(&l)
			err := l.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}
