package disk

import (
	"encoding/json"
	"testing"
	"time"
)

// TestNodeJSON: a node's JSON is what it was when Via and Reach were two
// fields (a legacy node "via": "legacy", no reach), and both forms read
// back to the same node, so state files of either form load.
func TestNodeJSON(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	base := `{"node_id":"n1","name":"h","addresses":["10.0.0.1"],"local":false,"online":true,"last_seen":"2026-12-01T10:00:00Z","disks":2`
	for name, c := range map[string]struct {
		reach Reach
		json  string
		older string // the earlier form, when it differs
	}{
		"multicast only": {"", base + `}`, ""},
		"gossip":         {"gossip", base + `,"reach":"gossip"}`, ""},
		"two paths":      {JoinReach(ReachMulticast, ReachVia(ReachGossip, "b1")), base + `,"reach":"multicast, gossip via b1"}`, ""},
		"legacy":         {ReachLegacy, base + `,"via":"legacy"}`, ""},
		"legacy, both":   {ReachLegacy, base + `,"via":"legacy"}`, base + `,"via":"legacy","reach":"legacy"}`},
	} {
		t.Run(name, func(t *testing.T) {
			n := Node{ID: "n1", Name: "h", Addresses: []string{"10.0.0.1"}, Online: true, LastSeen: at, Disks: 2, Reach: c.reach}
			b, err := json.Marshal(n)
			if err != nil || string(b) != c.json {
				t.Fatalf("marshal: %s, %v\nwant %s", b, err, c.json)
			}
			for _, in := range []string{c.json, c.older} {
				if in == "" {
					continue
				}
				var back Node
				if err := json.Unmarshal([]byte(in), &back); err != nil || back.Reach != c.reach || !back.LastSeen.Equal(at) || back.Disks != 2 {
					t.Errorf("unmarshal %s: %+v, %v", in, back, err)
				}
			}
		})
	}
}

func TestReachString(t *testing.T) {
	for r, want := range map[Reach]string{"": "multicast", ReachGossip: "gossip", ReachLegacy: "legacy",
		ReachVia(ReachMulticast, "a1"): "multicast via a1"} {
		if r.String() != want {
			t.Errorf("%q.String() = %q, want %q", string(r), r.String(), want)
		}
	}
	if !ReachLegacy.Legacy() || ReachGossip.Legacy() || Reach("").Legacy() {
		t.Error("Legacy()")
	}
	for r, want := range map[Reach]bool{"": true, ReachGossip: true, ReachLegacy: false,
		ReachVia(ReachMulticast, "a1"): false, ReachVia(ReachGossip, "gossip"): false,
		JoinReach(ReachVia(ReachGossip, "a1"), ReachMulticast): true} {
		if r.FirstHand() != want {
			t.Errorf("%q.FirstHand() = %v", string(r), !want)
		}
	}
}
