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
		{name: "cap counts cooldown and pending release",
			c: Counts{Assigned: 200, Cooldown: 40, PendingRelease: 5}, want: Decision{Add: 5, AtLimit: true}},
		{name: "full NIC with waiters is at limit",
			c: Counts{Assigned: 250}, waiters: 3, want: Decision{Add: 0, AtLimit: true}},
		{name: "full NIC without waiters still reports the limit",
			c: Counts{Assigned: 250}, want: Decision{Add: 0, AtLimit: true}},
		{name: "rounding that exceeds the room is trimmed without being at limit",
			c: Counts{Assigned: 236}, want: Decision{Add: 14}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Decide(tc.c, tc.waiters, l)
			if got != tc.want {
				t.Errorf("Decide(%+v, waiters=%d) = %+v, want %+v", tc.c, tc.waiters, got, tc.want)
			}
		})
	}
}

func TestDecideNeverOversteps(t *testing.T) {
	// Property over a grid: growth never takes the NIC over MaxIPs, release never goes below
	// the high watermark, and one decision never both adds and releases.
	l := Limits{BatchSize: 4, MinFree: 3, MaxFree: 7, MaxIPs: 20}
	for av := 0; av <= 20; av++ {
		for as := 0; as+av <= 20; as++ {
			for w := 0; w <= 25; w += 5 {
				c := Counts{Available: av, Assigned: as}
				d := Decide(c, w, l)
				if d.Add > 0 && d.Release > 0 {
					t.Fatalf("%+v w=%d: both add and release: %+v", c, w, d)
				}
				if c.Total()+d.Add > l.MaxIPs {
					t.Fatalf("%+v w=%d: add %d exceeds max IPs", c, w, d.Add)
				}
				if d.Release > 0 && av-d.Release < l.MaxFree {
					t.Fatalf("%+v w=%d: release %d goes below max free", c, w, d.Release)
				}
				if d.Add > 0 && !d.AtLimit && av+d.Add < w+l.MinFree {
					t.Fatalf("%+v w=%d: add %d does not cover demand", c, w, d.Add)
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
