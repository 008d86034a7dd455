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
	datagramsAccepted
	datagramsDropped
	peersEvicted
	intervalsClamped
	logLinesSuppressed
	dropOwn
	dropNodeConflict
	dropNotGroup
	dropRateLimited
	dropSourcesFull
	dropQueueFull
	dropStaleInstance
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
	dropRelayedFull
	deltasSent
	deltasApplied
	changesWaited
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
	// Every datagram received ends in exactly one of these two: accepted
	// (it passed every check and the replay window) or dropped (and then
	// also counted under its drop_REASON).
	datagramsAccepted:  "datagrams_accepted",
	datagramsDropped:   "datagrams_dropped",
	peersEvicted:       "peers_evicted",        // least recently heard, forgotten to make room for a new one
	intervalsClamped:   "intervals_clamped",    // heartbeats advertising an interval outside [MinPeerInterval, MaxPeerInterval]
	logLinesSuppressed: "log_lines_suppressed", // by the per-kind log limits
	dropOwn:            "drop_own",             // our own datagrams, looped back
	dropNodeConflict:   "drop_node_conflict",
	dropNotGroup:       "drop_not_group",
	dropRateLimited:    "drop_rate_limited",
	dropSourcesFull:    "drop_sources_full", // a new source while maxSources busy ones are tracked
	dropQueueFull:      "drop_queue_full",
	dropStaleInstance:  "drop_stale_instance",
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
	relaysIgnored:      "relays_ignored",    // of a node we hear first hand
	dropRelayedFull:    "drop_relayed_full", // a relayed node beyond max_peers relayed nodes
	deltasSent:         "deltas_sent",
	deltasApplied:      "deltas_applied",
	changesWaited:      "changes_waited", // local changes that waited for the byte budget (then went coalesced)
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

// dropDatagram counts a received datagram dropped for reason r.
func (c *counters) dropDatagram(r wire.Reason) {
	c.reason[r].Add(1)
	c.c[datagramsDropped].Add(1)
}

// dropDatagramAs counts a received datagram dropped by one of the service's
// own checks (k is a drop_ counter).
func (c *counters) dropDatagramAs(k counter) {
	c.c[k].Add(1)
	c.c[datagramsDropped].Add(1)
}

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

// allow reports whether a datagram from src may pass: ok, or the counter
// of the bound it broke (dropRateLimited, dropSourcesFull).
func (l *sourceLimiter) allow(now time.Time, src netip.Addr) (ok bool, broke counter) {
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
				return false, dropSourcesFull // a flood of distinct sources: refuse newcomers
			}
		}
		b = &bucket{}
		l.m[src] = b
	}
	if !b.allow(now, l.rate, l.burst) {
		return false, dropRateLimited
	}
	return true, 0
}

// logKind names a kind of log line that something outside this machine
// can cause. Log lines are limited per kind, never per value a datagram
// carries (a source address, a node ID): a stranger choosing values would
// otherwise get a fresh allowance for each.
type logKind uint8

const (
	logReceiveError logKind = iota
	logRateLimited
	logSourcesFull
	logNodeConflict
	logUnauthenticated
	logBadDatagram
	logAnnounceDropped
	logPeerOffline
	logPeerGoodbye
	logPeerEvicted
	logIntervalClamped
	logSendFailed
	logJoinFailed
	logScanFailed
	logNoInterface
	logLocalSkipped
	logRequestStale
	logRequest
	numLogKinds
)

// logBudget is how many lines of a kind may go out in a burst, and how
// often one more is allowed after that.
type logBudget struct {
	burst int
	every time.Duration
}

// logBudgets: one line a minute for what floods (bad datagrams, rate
// limits), a few more for events an administrator wants to see one by one
// on a healthy network (a peer going offline).
var logBudgets = [numLogKinds]logBudget{
	logReceiveError:    {1, time.Minute},
	logRateLimited:     {1, time.Minute},
	logSourcesFull:     {1, time.Minute},
	logNodeConflict:    {1, time.Minute},
	logUnauthenticated: {1, time.Minute},
	logBadDatagram:     {1, time.Minute},
	logAnnounceDropped: {1, time.Minute},
	logPeerOffline:     {10, 6 * time.Second},
	logPeerGoodbye:     {10, 6 * time.Second},
	logPeerEvicted:     {1, time.Minute},
	logIntervalClamped: {1, time.Hour},
	logSendFailed:      {1, time.Minute},
	logJoinFailed:      {1, time.Minute},
	logScanFailed:      {1, time.Minute},
	logNoInterface:     {1, time.Hour},
	logLocalSkipped:    {1, time.Hour},
	logRequestStale:    {1, time.Minute},
	// Who asked for a mount is the owner's audit trail: generous, but a
	// keyed peer posing as many nodes still cannot flood the log.
	logRequest: {20, 200 * time.Millisecond},
}

// logLimiter is a token bucket per log kind. Its memory is fixed (an
// array indexed by kind), whatever arrives. The zero value is ready.
type logLimiter struct {
	mu         sync.Mutex
	b          [numLogKinds]bucket
	suppressed [numLogKinds]uint64
}

// allow reports whether a line of kind k may go out now, and how many of
// that kind were suppressed since the last one that did (to be logged
// with it).
func (l *logLimiter) allow(k logKind, now time.Time) (ok bool, suppressed uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	bu := logBudgets[k]
	if !l.b[k].allow(now, float64(time.Second)/float64(bu.every), float64(bu.burst)) {
		l.suppressed[k]++
		return false, 0
	}
	suppressed, l.suppressed[k] = l.suppressed[k], 0
	return true, suppressed
}
