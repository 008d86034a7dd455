package peer_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/peer"
	"github.com/diskd/diskd/pkg/testutil"
	"github.com/diskd/diskd/pkg/wire"
)

const testKey = "1 0123456789abcdef0123456789abcdef\n"

// TestRequests: on a keyed network a request reaches its target only,
// which acts on it once and answers; a third node ignores it; a captured
// request resent changes nothing; without a key neither end takes part.
func TestRequests(t *testing.T) {
	hosts := testutil.Hosts(t, 4)
	keys := writeKeys(t, testKey)
	keyed := func(c *peer.Config) { c.KeyFile = keys }
	owner := startNode(t, hosts[0], keyed)
	asker := startNode(t, hosts[1], keyed)
	other := startNode(t, hosts[2], keyed)
	tap := newTap(t, hosts[3])

	var acted, otherActed atomic.Int32
	var mu sync.Mutex
	var seen []wire.Request
	var from disk.Node
	owner.svc.SetRequestHandler(func(ctx context.Context, f disk.Node, r wire.Request) wire.Reply {
		acted.Add(1)
		mu.Lock()
		seen, from = append(seen, r), f
		mu.Unlock()
		return wire.Reply{Status: wire.StatusOK, Path: "/media/diskd/" + r.Query}
	})
	other.svc.SetRequestHandler(func(context.Context, disk.Node, wire.Request) wire.Reply {
		otherActed.Add(1)
		return wire.Reply{Status: wire.StatusFailed}
	})
	testutil.Eventually(t, wait, "everyone met", func() bool { return asker.online(owner.id()) && owner.online(asker.id()) })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := asker.svc.Request(ctx, owner.id(), wire.Request{Action: wire.ActionMount, Query: "BACKUP", UID: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Status != wire.StatusOK || rep.Path != "/media/diskd/BACKUP" {
		t.Errorf("reply %+v", rep)
	}
	mu.Lock()
	if len(seen) != 1 || seen[0].UID != 1000 || seen[0].Query != "BACKUP" || from.ID != asker.id() || from.Name != hosts[1].Hostname {
		t.Errorf("owner saw %+v from %+v", seen, from)
	}
	mu.Unlock()
	if otherActed.Load() != 0 {
		t.Error("a node the request was not for acted on it")
	}

	// Replay every request datagram captured: nothing is acted on again.
	var reqs [][]byte
	dec := wire.NewDecoder(mustKeys(t, keys))
	testutil.Eventually(t, wait, "the tap to see the request", func() bool {
		reqs = nil
		for _, b := range tap.Datagrams() {
			if p, err := dec.Decode(b); err == nil && p.Type == wire.TypeRequest {
				reqs = append(reqs, b)
			}
		}
		return len(reqs) > 0
	})
	before := counter(owner, "drop_duplicate")
	tap.Send(netip.Addr{}, reqs...)
	testutil.Eventually(t, wait, "replays dropped", func() bool { return counter(owner, "drop_duplicate") >= before+uint64(len(reqs)) })
	if n := acted.Load(); n != 1 {
		t.Errorf("acted %d times, want 1", n)
	}

	// A request to a node that is not there: no answer, said so.
	short, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	if _, err := asker.svc.Request(short, "0123456789abcdef0123456789abcdef", wire.Request{Action: wire.ActionMount, Query: "X"}); !errors.Is(err, peer.ErrNoAnswer) {
		t.Errorf("request to nobody: %v", err)
	}
}

func TestRequestsNeedAKey(t *testing.T) {
	hosts := testutil.Hosts(t, 2)
	a := startNode(t, hosts[0], nil)
	b := startNode(t, hosts[1], nil)
	b.svc.SetRequestHandler(func(context.Context, disk.Node, wire.Request) wire.Reply {
		t.Error("acted on a request of an unauthenticated network")
		return wire.Reply{}
	})
	testutil.Eventually(t, wait, "met", func() bool { return a.online(b.id()) })
	if _, err := a.svc.Request(context.Background(), b.id(), wire.Request{Action: wire.ActionMount, Query: "X"}); !errors.Is(err, wire.ErrUnkeyed) {
		t.Errorf("request on an unkeyed network: %v", err)
	}
	// A forged untagged request reaches b: dropped at decode, counted.
	forged := wire.NewEncoder(wire.NodeID{0xee}, wire.NewInstance(time.Now()), mustKeysText(t, testKey))
	bid, _ := wire.ParseNodeID(b.id())
	dg, err := forged.Request(1, wire.Request{Target: bid, Action: wire.ActionMount, Query: "X", Sent: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	// Strip the tag: the flag byte and the 16 tag bytes.
	dg[6], dg[7] = 0, 0
	dg = dg[:len(dg)-wire.TagSize]
	tap := newTap(t, hosts[0])
	tap.Send(netip.Addr{}, dg)
	testutil.Eventually(t, wait, "untagged request counted", func() bool { return counter(b, "drop_unkeyed_request") > 0 })
}

func mustKeys(t *testing.T, path string) *wire.Keyring {
	t.Helper()
	k, err := wire.LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustKeysText(t *testing.T, text string) *wire.Keyring {
	return mustKeys(t, writeKeys(t, text))
}
