package peer

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskd/diskd/pkg/wire"
)

type counter int

// Counters besides the wire's drop reasons. Names are what Status shows.
const (
	sentDatagrams4 counter = iota
	sentBytes4
	sentDatagrams6
	sentBytes6
	recvDatagrams4
	recvBytes4
	recvDatagrams6
	recvBytes6
	sendFailed
	heartbeatsSent
	announcesSent
	queriesSent
	goodbyesSent
	answersSent
	answersAsHeartbeat
	answersSkipped
	generationsApplied
	peersWentOffline
	goodbyesReceived
	localSkipped
	localTrimmed
	dropOwn
	dropNodeConflict
	dropNotGroup
	dropRateLimited
	dropQueueFull
	dropStaleInstance
	dropPeersFull
	dropQueryLimited
	dropPendingEvicted
	dropPendingExpired
	dropInconsistent
	requestsSent
	requestsReceived
	repliesSent
	dropRequestStale
	relaysSent
	relaysApplied
	relaysIgnored
	numCounters
)

var counterNames = [numCounters]string{
	sentDatagrams4:     "sent_datagrams_ipv4",
	sentBytes4:         "sent_bytes_ipv4",
	sentDatagrams6:     "sent_datagrams_ipv6",
	sentBytes6:         "sent_bytes_ipv6",
	recvDatagrams4:     "received_datagrams_ipv4",
	recvBytes4:         "received_bytes_ipv4",
	recvDatagrams6:     "received_datagrams_ipv6",
	recvBytes6:         "received_bytes_ipv6",
	sendFailed:         "send_failed",
	heartbeatsSent:     "heartbeats_sent",
	announcesSent:      "announces_sent",
	queriesSent:        "queries_sent",
	goodbyesSent:       "goodbyes_sent",
	answersSent:        "answers_sent",
	answersAsHeartbeat: "answers_as_heartbeat", // announced lately: answered with a heartbeat
	answersSkipped:     "answers_skipped",      // an announce went out meanwhile
	generationsApplied: "generations_applied",
	peersWentOffline:   "peers_went_offline",
	goodbyesReceived:   "goodbyes_received",
	localSkipped:       "local_disks_skipped", // over the wire limits, not announced
	localTrimmed:       "local_disks_trimmed",
	dropOwn:            "drop_own", // our own datagrams, looped back
	dropNodeConflict:   "drop_node_conflict",
	dropNotGroup:       "drop_not_group",
	dropRateLimited:    "drop_rate_limited",
	dropQueueFull:      "drop_queue_full",
	dropStaleInstance:  "drop_stale_instance",
	dropPeersFull:      "drop_peers_full",
	dropQueryLimited:   "drop_query_limited",
	dropPendingEvicted: "drop_pending_evicted",
	dropPendingExpired: "drop_pending_expired",
	dropInconsistent:   "drop_" + wire.ReasonInconsistent.String(),
	requestsSent:       "requests_sent",
	requestsReceived:   "requests_received",
	repliesSent:        "replies_sent",
	dropRequestStale:   "drop_request_stale", // a request's time too far from ours, or its ID reused
	relaysSent:         "relays_sent",        // relayed announces (relay.go)
	relaysApplied:      "relays_applied",
	relaysIgnored:      "relays_ignored", // of a node we hear first hand
}

type counters struct {
	c      [numCounters]atomic.Uint64
	reason [256]atomic.Uint64 // by wire.Reason
}

func (c *counters) add(k counter, n uint64) { c.c[k].Add(n) }
func (c *counters) inc(k counter)           { c.c[k].Add(1) }
func (c *counters) set(k counter, n uint64) { c.c[k].Store(n) }
func (c *counters) get(k counter) uint64    { return c.c[k].Load() }
func (c *counters) drop(r wire.Reason)      { c.reason[r].Add(1) }

func (c *counters) snapshot() map[string]uint64 {
	m := make(map[string]uint64, int(numCounters)+32)
	for k := counter(0); k < numCounters; k++ {
		m[counterNames[k]] = c.c[k].Load()
	}
	for _, r := range wire.Reasons() {
		if r != wire.ReasonInconsistent { // counted by the assembler, above
			m["drop_"+r.String()] = c.reason[r].Load()
		}
	}
	m["sent_datagrams"] = m["sent_datagrams_ipv4"] + m["sent_datagrams_ipv6"]
	m["sent_bytes"] = m["sent_bytes_ipv4"] + m["sent_bytes_ipv6"]
	m["received_datagrams"] = m["received_datagrams_ipv4"] + m["received_datagrams_ipv6"]
	m["received_bytes"] = m["received_bytes_ipv4"] + m["received_bytes_ipv6"]
	return m
}

// bucket is a token bucket; the zero value starts full.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) allow(now time.Time, rate, burst float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else if now.After(b.last) {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sourceLimiter bounds datagrams per source address. One per reader
// goroutine, so unsynchronised.
type sourceLimiter struct {
	rate, burst float64
	max         int
	m           map[netip.Addr]*bucket
}

func newSourceLimiter(rate, burst float64, max int) *sourceLimiter {
	return &sourceLimiter{rate: rate, burst: burst, max: max, m: make(map[netip.Addr]*bucket)}
}

func (l *sourceLimiter) allow(now time.Time, src netip.Addr) bool {
	b := l.m[src]
	if b == nil {
		if len(l.m) >= l.max {
			// Forget sources whose bucket has refilled: they lose nothing.
			full := time.Duration(l.burst / l.rate * float64(time.Second))
			for a, ob := range l.m {
				if now.Sub(ob.last) > full {
					delete(l.m, a)
				}
			}
			if len(l.m) >= l.max {
				return false // a flood of distinct sources: refuse newcomers
			}
		}
		b = &bucket{}
		l.m[src] = b
	}
	return b.allow(now, l.rate, l.burst)
}

// logLimiter lets a message through once per interval per key, so a
// flood of bad datagrams cannot flood the log.
type logLimiter struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (l *logLimiter) allow(key string, every time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = make(map[string]time.Time)
	}
	now := time.Now()
	if t, ok := l.last[key]; ok && now.Sub(t) < every {
		return false
	}
	if len(l.last) > 256 {
		clear(l.last)
	}
	l.last[key] = now
	return true
}
