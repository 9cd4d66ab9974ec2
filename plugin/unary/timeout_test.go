package unary

import (
	"testing"
	"time"
)

func TestTimeoutHeaderIsAtMostEightDigitsRoundedUp(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "1n"},
		{0, "1n"},
		{1500 * time.Nanosecond, "1500n"},
		{99999999 * time.Nanosecond, "99999999n"},
		{100000001 * time.Nanosecond, "100001u"},
		{30 * time.Second, "30000000u"},
		{120 * time.Second, "120000m"},
		{27 * time.Hour, "97200000m"},
		{24000 * time.Hour, "86400000S"},
		{120000 * time.Hour, "7200000M"},
	} {
		if got := timeout(c.d); got != c.want {
			t.Errorf("timeout(%v) = %q, want %q", c.d, got, c.want)
		}
	}
}
