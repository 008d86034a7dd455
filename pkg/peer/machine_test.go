package peer

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/wire"
)

var t0 = time.Unix(1_700_000_000, 0)

func ms(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }

// simulate runs a pacer over change times (ms), checking every ms, and
// returns when announces went out (ms).
func simulate(perMinute int, changes []int, until int) []int {
	p := pacer{perMinute: perMinute}
	var sent []int
	next := 0
	for now := 0; now <= until; now++ {
		for next < len(changes) && changes[next] == now {
			p.changed(ms(now))
			next++
		}
		if p.due(ms(now)) {
			sent = append(sent, now)
		}
	}
	return sent
}

func TestPacer(t *testing.T) {
	every := func(step, n int) []int {
		var out []int
		for i := range n {
			out = append(out, i*step)
		}
		return out
	}
	tests := []struct {
		name      string
		perMinute int
		changes   []int
		until     int
		want      []int
	}{
		{"one change, at once", 10, []int{500}, 5000, []int{500}},
		{"burst coalesces after the gap", 10, []int{0, 10, 20, 300}, 5000, []int{0, 1000}},
		{"spaced changes each at once", 10, []int{0, 1500, 3000}, 5000, []int{0, 1500, 3000}},
		{"change during the gap waits for it", 10, []int{0, 400}, 5000, []int{0, 1000}},
		{"minute budget", 10, every(2000, 15), 61000,
			[]int{0, 2000, 4000, 6000, 8000, 10000, 12000, 14000, 16000, 18000, 60000}},
		{"faster limit, shorter gap", 600, []int{0, 10, 50, 100, 300}, 1000, []int{0, 100, 300}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := simulate(tt.perMinute, tt.changes, tt.until); !slices.Equal(got, tt.want) {
				t.Errorf("sent at %v, want %v", got, tt.want)
			}
		})
	}
	// Whatever the changes, no minute holds more than the budget.
	sent := simulate(10, every(100, 3000), 300_000)
	for i := 10; i < len(sent); i++ {
		if sent[i]-sent[i-10] < 60_000 {
			t.Fatalf("11 announces within a minute: %v", sent[i-10:i+1])
		}
	}
}

// testFx is a machine's effects on a real store; sends are kept.
type testFx struct {
	storeEffects
	sent [][]byte
}

func (f *testFx) Send(dgs [][]byte)  { f.sent = append(f.sent, dgs...) }
func (f *testFx) Act(*Action) bool   { return false }
func (f *testFx) Replied(wire.Reply) {}

// testMachine is a machine with its effects and store at hand.
type testMachine struct {
	*Machine
	fx *testFx
	st *store.Store
}

// offline returns a machine with no sockets: sends go nowhere, but every
// decision and counter is real, and store updates reach a real store.
func offline(t *testing.T) testMachine {
	t.Helper()
	st := store.New(store.Options{Local: disk.Node{ID: "0123456789abcdef0123456789abcdef", Name: "me"}})
	self, err := wire.ParseNodeID(st.LocalNode().ID)
	if err != nil {
		t.Fatal(err)
	}
	fx := &testFx{storeEffects: storeEffects{st}}
	m := NewMachine(MachineConfig{Self: self, Name: "me", Instance: wire.NewInstance(t0),
		HeartbeatInterval: DefaultInterval, Rand: rand.New(rand.NewPCG(1, 2))}, fx)
	return testMachine{Machine: m, fx: fx, st: st}
}

func TestAnswers(t *testing.T) {
	l := offline(t)
	asker := func(b byte, first time.Time) *peerState {
		ps := &peerState{id: wire.NodeID{b}, firstHeard: first, online: true}
		l.peers[ps.id] = ps
		return ps
	}
	all := &wire.Query{}
	c := func(name counter) uint64 { return l.ctr.get(name) }

	// A query for all: an announce after 20-120 ms.
	a := asker(1, ms(0))
	l.onQuery(ms(0), a, all)
	if l.answer == nil || !l.answer.full || l.answer.at.Before(ms(20)) || !l.answer.at.Before(ms(120)) {
		t.Fatalf("answer %+v", l.answer)
	}
	// Queries meanwhile join the same answer.
	l.onQuery(ms(5), asker(2, ms(5)), all)
	at := l.answer.at
	l.fireAnswer(at)
	if c(announcesSent) != 1 || c(answersSent) != 1 || l.answer != nil {
		t.Fatalf("announces %d answers %d", c(announcesSent), c(answersSent))
	}
	// A peer heard before that announce asks again soon: it got the
	// announce, so a heartbeat answers.
	l.onQuery(at.Add(200*time.Millisecond), a, all)
	if l.answer.full {
		t.Error("full answer to a querier that heard our announce")
	}
	// ...but a newcomer in the same window needs the announce.
	l.onQuery(at.Add(210*time.Millisecond), asker(3, at.Add(210*time.Millisecond)), all)
	if !l.answer.full {
		t.Error("newcomer would get only a heartbeat")
	}
	l.fireAnswer(l.answer.at)
	if c(announcesSent) != 2 {
		t.Errorf("announces %d, want 2", c(announcesSent))
	}
	// A query naming us is always answered with an announce.
	l.onQuery(l.lastAnnounce.Add(10*time.Millisecond), a, &wire.Query{Targets: []wire.NodeID{l.cfg.Self}})
	if l.answer == nil || !l.answer.full {
		t.Error("targeted query not answered with an announce")
	}
	l.fireAnswer(l.answer.at)
	// A query naming others is not ours to answer.
	l.onQuery(ms(5000), asker(4, ms(0)), &wire.Query{Targets: []wire.NodeID{{9}}})
	if l.answer != nil {
		t.Error("answered a query for another node")
	}
	// An announce that goes out between query and answer serves it.
	l.onQuery(ms(6000), asker(5, ms(6000)), all)
	l.announce(ms(6010), "change")
	l.fireAnswer(l.answer.at)
	if c(answersSkipped) != 1 {
		t.Errorf("answers skipped %d, want 1", c(answersSkipped))
	}
}

func TestAnswerLimits(t *testing.T) {
	l := offline(t)
	all := &wire.Query{}
	// One querier: 3 answers, then one per 2 s.
	ps := &peerState{id: wire.NodeID{1}, firstHeard: ms(0)}
	l.peers[ps.id] = ps
	for i := range 5 {
		l.onQuery(ms(i*10), ps, all)
	}
	if got := l.ctr.get(dropQueryLimited); got != 2 {
		t.Errorf("limited %d of 5 queries from one asker, want 2", got)
	}
	// Many queriers: at most answerBurst answers at once, then 5 a second.
	l = offline(t)
	sent := 0
	for i := range 100 {
		now := ms(i * 50)
		q := &peerState{id: wire.NodeID{byte(i), 1}, firstHeard: now}
		l.peers[q.id] = q
		l.onQuery(now, q, all)
		if l.answer != nil && !now.Before(l.answer.at) {
			l.fireAnswer(now)
		}
		for l.answer != nil && !ms(i*50+49).Before(l.answer.at) {
			l.fireAnswer(l.answer.at)
		}
		sent = int(l.ctr.get(answersSent))
	}
	// 5 s of queries every 50 ms: the bucket allows 10 + 5/s * 5 s.
	if sent > answerBurst+answerRate*5+1 {
		t.Errorf("%d answers to 100 queries in 5 s", sent)
	}
	if sent < 10 {
		t.Errorf("only %d answers", sent)
	}
}

func TestAnswerDelayWidens(t *testing.T) {
	l := offline(t)
	hi := func() time.Duration {
		var m time.Duration
		for range 2000 {
			m = max(m, l.answerDelay())
		}
		return m
	}
	small := hi()
	for i := range 100 {
		l.peers[wire.NodeID{byte(i), 2}] = &peerState{online: true}
	}
	big := hi()
	if small > answerMaxDelay || big <= answerMaxDelay || big > answerDelayCap {
		t.Errorf("max delay %v with no peers, %v with 100", small, big)
	}
}

// TestConfig: the groups joined and sent to per family, and the values New
// refuses. (The flags and file keys that set them are cmd/diskd's.)
func TestConfig(t *testing.T) {
	v6def := []string{DefaultGroup6, DefaultGroup6Site}
	tests := []struct {
		name          string
		set           func(*Config)
		g4, g6, send6 []string
		errPart       string
	}{
		{"defaults", func(*Config) {}, []string{DefaultGroup4}, v6def, []string{DefaultGroup6}, ""},
		{"routed: the site-scope group", func(c *Config) { c.TTL = 2 }, []string{DefaultGroup4}, v6def, []string{DefaultGroup6Site}, ""},
		{"v4 group keeps the v6 default", func(c *Config) { c.Groups = []string{"239.1.2.3"} }, []string{"239.1.2.3"}, v6def, []string{DefaultGroup6}, ""},
		{"both", func(c *Config) { c.Groups = []string{"ff02::1:2", "239.1.2.3", "239.1.2.4"} },
			[]string{"239.1.2.3", "239.1.2.4"}, []string{"ff02::1:2"}, []string{"ff02::1:2"}, ""},
		{"a lone link-scope group with ttl 2 is still used", func(c *Config) { c.Groups, c.TTL = []string{"ff02::1:2"}, 2 },
			[]string{DefaultGroup4}, []string{"ff02::1:2"}, []string{"ff02::1:2"}, ""},
		{"organisation scope with ttl 3", func(c *Config) { c.Groups, c.TTL = []string{"ff02::1:2", "ff08::1:2"}, 3 },
			[]string{DefaultGroup4}, []string{"ff02::1:2", "ff08::1:2"}, []string{"ff08::1:2"}, ""},
		{"not multicast", func(c *Config) { c.Groups = []string{"10.0.0.1"} }, nil, nil, nil, "not a multicast"},
		{"not an address", func(c *Config) { c.Groups = []string{"x"} }, nil, nil, nil, "group"},
		{"port", func(c *Config) { c.Port = 0 }, nil, nil, nil, "port"},
		{"ttl", func(c *Config) { c.TTL = 300 }, nil, nil, nil, "ttl"},
		{"interval", func(c *Config) { c.HeartbeatInterval = time.Millisecond }, nil, nil, nil, "interval"},
		{"no family", func(c *Config) { c.IPv4, c.IPv6 = false, false }, nil, nil, nil, "both"},
		{"key file missing", func(c *Config) { c.KeyFile = "/nonexistent" }, nil, nil, nil, "key file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.set(&c)
			st := store.New(store.Options{Local: disk.Node{ID: "0123456789abcdef0123456789abcdef"}})
			s, err := New(c, st, nil)
			if tt.errPart != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errPart) {
					t.Fatalf("err %v, want %q", err, tt.errPart)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			str := func(as []netip.Addr) []string {
				var out []string
				for _, a := range as {
					out = append(out, a.String())
				}
				return out
			}
			if !slices.Equal(str(s.g4), tt.g4) || !slices.Equal(str(s.g6), tt.g6) || !slices.Equal(str(s.send6), tt.send6) {
				t.Errorf("groups %v %v sending to %v, want %v %v sending to %v", s.g4, s.g6, s.send6, tt.g4, tt.g6, tt.send6)
			}
		})
	}
}

func TestSourceLimiter(t *testing.T) {
	l := newSourceLimiter(10, 20, 2)
	a, b, c := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	allow := func(now time.Time, src netip.Addr) bool { ok, _ := l.allow(now, src); return ok }
	n := 0
	for range 100 {
		if allow(t0, a) {
			n++
		}
	}
	if n != 20 {
		t.Errorf("burst let %d through, want 20", n)
	}
	if _, broke := l.allow(t0, a); broke != dropRateLimited {
		t.Errorf("over the rate counted as %s", counterNames[broke])
	}
	if !allow(t0.Add(time.Second), a) {
		t.Error("no refill after a second")
	}
	if !allow(t0, b) {
		t.Error("second source refused")
	}
	if ok, broke := l.allow(t0, c); ok || broke != dropSourcesFull {
		t.Errorf("third source beyond the table's bound while the others are busy: ok %v, counted as %s", ok, counterNames[broke])
	}
	if !allow(t0.Add(time.Hour), c) {
		t.Error("third source refused once the others went quiet")
	}
}

// packet is what a peer's encoder would send, decoded as the reader does.
func packet(t *testing.T, b []byte) *wire.Packet {
	t.Helper()
	p, err := wire.NewDecoder(nil).Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAdvertisedIntervalIsClamped: the offline timeout is ours. A node
// advertising an hour is offline after 3 x MaxPeerInterval of silence; one
// advertising the minimum the wire allows is not dropped between its
// heartbeats.
func TestAdvertisedIntervalIsClamped(t *testing.T) {
	tests := []struct {
		name       string
		advertised time.Duration
		offlineBy  time.Duration // silent this long: offline
		onlineAt   time.Duration // silent this long: still online
		clamped    uint64
	}{
		{"an hour", time.Hour, offlineAfter*MaxPeerInterval + time.Second, offlineAfter*MaxPeerInterval - time.Second, 1},
		{"the wire's minimum", wire.MinInterval, offlineAfter*MinPeerInterval + time.Second, offlineAfter*MinPeerInterval - 100*time.Millisecond, 1},
		{"in range", 10 * time.Second, 31 * time.Second, 29 * time.Second, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := offline(t)
			enc := wire.NewEncoder(wire.NodeID{7}, wire.NewInstance(t0), nil)
			l.Receive(t0, packet(t, enc.Heartbeat(0, wire.Heartbeat{Name: "x", Interval: tt.advertised})), netip.Addr{})
			ps := l.peers[wire.NodeID{7}]
			if ps == nil || !ps.online {
				t.Fatal("heartbeat did not make the peer online")
			}
			l.checkOffline(t0.Add(tt.onlineAt))
			if !ps.online {
				t.Errorf("offline after %v of silence", tt.onlineAt)
			}
			l.checkOffline(t0.Add(tt.offlineBy))
			if ps.online {
				t.Errorf("still online after %v of silence", tt.offlineBy)
			}
			if got := l.ctr.get(intervalsClamped); got != tt.clamped {
				t.Errorf("intervals_clamped %d, want %d", got, tt.clamped)
			}
			if n, ok := l.st.Node(ps.did); !ok || n.Online {
				t.Errorf("store: %+v", n)
			}
		})
	}
}

// TestFullPeerTableEvictsLeastRecentlyHeard: when the table is full a new
// node is taken, and the node that makes room is the longest offline, else
// the one heard least recently; each eviction is counted and the evicted
// node marked offline in the store.
func TestFullPeerTableEvictsLeastRecentlyHeard(t *testing.T) {
	l := offline(t)
	l.cfg.MaxPeers = 3
	encs := map[byte]*wire.Encoder{}
	hb := func(id byte, at time.Time) {
		enc := encs[id]
		if enc == nil {
			enc = wire.NewEncoder(wire.NodeID{id}, wire.NewInstance(t0), nil)
			encs[id] = enc
		}
		l.Receive(at, packet(t, enc.Heartbeat(0, wire.Heartbeat{Name: fmt.Sprint(id), Interval: time.Second})), netip.Addr{})
	}
	ids := func() []byte {
		var out []byte
		for id := range l.peers {
			out = append(out, id[0])
		}
		slices.Sort(out)
		return out
	}
	hb(1, ms(0))
	hb(2, ms(1000))
	hb(3, ms(2000))
	hb(1, ms(3000)) // 1 heard again: 2 is now the least recently heard
	hb(4, ms(3500))
	if got := ids(); !slices.Equal(got, []byte{1, 3, 4}) {
		t.Fatalf("peers %v, want [1 3 4]", got)
	}
	if n, _ := l.st.Node(wire.NodeID{2}.Domain()); n.Online {
		t.Error("evicted peer still online in the store")
	}
	// 3 goes silent (offline at 3 s of silence): it goes before 1, which
	// was heard earlier but is still online.
	hb(1, ms(5500))
	hb(4, ms(5500))
	l.checkOffline(ms(5500))
	if l.peers[wire.NodeID{3}].online {
		t.Fatal("3 not offline")
	}
	hb(5, ms(6000))
	if got := ids(); !slices.Equal(got, []byte{1, 4, 5}) {
		t.Fatalf("peers %v, want [1 4 5]", got)
	}
	if got := l.ctr.get(peersEvicted); got != 2 {
		t.Errorf("peers_evicted %d, want 2", got)
	}
	if l.lru.len() != len(l.peers) {
		t.Errorf("eviction order holds %d peers, table %d", l.lru.len(), len(l.peers))
	}
	// A flood of new IDs: the table stays at its bound and the order
	// list with it.
	for i := range 1000 {
		hb(byte(10+i%200), ms(7000+i))
	}
	if len(l.peers) != 3 || l.lru.len() != 3 {
		t.Errorf("after a flood: %d peers, %d in the order list", len(l.peers), l.lru.len())
	}
}

// TestLogLimitsArePerKind: a stranger choosing source addresses or node
// IDs gets no more log lines than one: the limit is per kind, and what it
// suppresses is counted and reported with the next line.
func TestLogLimitsArePerKind(t *testing.T) {
	var buf strings.Builder
	st := store.New(store.Options{Local: disk.Node{ID: "0123456789abcdef0123456789abcdef", Name: "me"}})
	s, err := New(DefaultConfig(), st, slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	for i := range 10000 {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		s.dropped(&wire.DropError{Reason: wire.ReasonBadTag}, src)
		s.dropped(&wire.DropError{Reason: wire.ReasonBadMagic}, src)
		s.logLimited(logRateLimited, slog.LevelWarn, "source over its datagram rate; dropping", "src", src)
	}
	if n := strings.Count(buf.String(), "\n"); n != 3 {
		t.Errorf("%d log lines for 30000 events of 3 kinds from 10000 sources, want 3:\n%s", n, buf.String())
	}
	if got := s.ctr.get(logLinesSuppressed); got != 29997 {
		t.Errorf("log_lines_suppressed %d, want 29997", got)
	}
	// The budget refills: the next line of a kind says what was suppressed.
	ok, n := s.logLimit.allow(logBadDatagram, time.Now().Add(time.Minute+time.Second))
	if !ok || n != 9999 {
		t.Errorf("after a minute: allowed %v, suppressed %d, want 9999", ok, n)
	}
	// Peer-offline lines are allowed in a burst, then spaced.
	var lim logLimiter
	got := 0
	for range 100 {
		if ok, _ := lim.allow(logPeerOffline, t0); ok {
			got++
		}
	}
	if got != logBudgets[logPeerOffline].burst {
		t.Errorf("%d offline lines in a burst, want %d", got, logBudgets[logPeerOffline].burst)
	}
}
