package logging

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := &Limiter{Every: time.Second}
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		kind string
		at   time.Duration
		ok   bool
		held int
	}{
		{"a", 0, true, 0},
		{"a", 100 * time.Millisecond, false, 0},
		{"b", 100 * time.Millisecond, true, 0}, // kinds are separate
		{"a", 900 * time.Millisecond, false, 0},
		{"a", 1000 * time.Millisecond, true, 2}, // the two held back are counted
		{"a", 1500 * time.Millisecond, false, 0},
		{"a", 5 * time.Second, true, 1},
	} {
		ok, held := l.Allow(tc.kind, t0.Add(tc.at))
		if ok != tc.ok || held != tc.held {
			t.Errorf("Allow(%s, +%s) = %v, %d; want %v, %d", tc.kind, tc.at, ok, held, tc.ok, tc.held)
		}
	}
}
