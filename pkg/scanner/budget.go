package scanner

import (
	"cmp"
	"slices"
	"time"
)

// bucket is the single-device probe budget: a token bucket that holds
// size tokens and gains size a second. A burst of real changes spends
// what piled up while the host was quiet; a storm is held to the rate.
type bucket struct {
	size   float64
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

func newBucket(size int, now time.Time) *bucket {
	return &bucket{size: float64(size), tokens: float64(size), at: now}
}

// available returns the whole tokens there are at now.
func (b *bucket) available(now time.Time) int {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(b.size, b.tokens+d.Seconds()*b.size)
		b.at = now
	}
	return int(b.tokens)
}

// take spends n tokens; the caller asked available first.
func (b *bucket) take(n int) { b.tokens -= float64(n) }

// wait is how long from now until a whole token is there.
func (b *bucket) wait(now time.Time) time.Duration {
	b.available(now)
	d := time.Duration((1 - b.tokens) / b.size * float64(time.Second))
	return max(d, time.Millisecond)
}

// oldest returns the n names of pending whose first event came first.
func oldest(pending map[string]uint64, n int) []string {
	names := make([]string, 0, len(pending))
	for name := range pending {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(pending[a], pending[b]) })
	return names[:min(n, len(names))]
}
