package wire

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRequestRoundTrip(t *testing.T) {
	k := testKeys(t, key1)
	enc := NewEncoder(testNode, testInstance, k)
	dec := NewDecoder(k)
	sent := time.UnixMilli(1_800_000_000_123)
	req := Request{ID: [16]byte{1, 2, 3}, Target: NodeID{9}, Action: ActionMount, Query: "BACKUP ä", RW: true, UID: 1000, Sent: sent}
	b, err := enc.Request(7, req)
	if err != nil {
		t.Fatal(err)
	}
	p, err := dec.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if p.Type != TypeRequest || p.Request == nil || *p.Request != req || p.Generation != 7 {
		t.Fatalf("decoded %+v %+v, want %+v", p.Header, p.Request, req)
	}
	rep := Reply{ID: req.ID, To: testNode, Status: StatusAlreadyMounted, Path: "/media/diskd/BACKUP", Message: "already mounted"}
	b, err = enc.Reply(7, rep)
	if err != nil {
		t.Fatal(err)
	}
	p, err = dec.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if p.Reply == nil || *p.Reply != rep {
		t.Fatalf("decoded %+v, want %+v", p.Reply, rep)
	}
	// A message over its limit is cut on a rune, not refused.
	long := Reply{ID: req.ID, To: testNode, Status: StatusFailed, Message: strings.Repeat("é", 200)}
	b, _ = enc.Reply(1, long)
	if p, err = dec.Decode(b); err != nil || len(p.Reply.Message) > MaxReplyMessage {
		t.Errorf("long message: %v, %d bytes", err, len(p.Reply.Message))
	}
}

// TestRequestNeedsKey: without a key neither end takes part: the encoder
// refuses, and a receiver (keyed or not) drops an untagged request.
func TestRequestNeedsKey(t *testing.T) {
	enc := NewEncoder(testNode, testInstance, nil)
	if _, err := enc.Request(1, Request{Query: "X", Action: ActionMount}); !errors.Is(err, ErrUnkeyed) {
		t.Errorf("unkeyed Request: %v", err)
	}
	if _, err := enc.Reply(1, Reply{}); !errors.Is(err, ErrUnkeyed) {
		t.Errorf("unkeyed Reply: %v", err)
	}
	body := mustCBOR(t, requestBody{ID: make([]byte, 16), Target: make([]byte, 16), Action: 1, Query: "X", UID: 0})
	untagged := build(TypeRequest, body, nil)
	if _, err := NewDecoder(nil).Decode(untagged); ReasonOf(err) != ReasonUnkeyedRequest {
		t.Errorf("untagged request to an unkeyed receiver: %v", err)
	}
	if _, err := NewDecoder(testKeys(t, key1)).Decode(untagged); ReasonOf(err) != ReasonUntagged {
		t.Errorf("untagged request to a keyed receiver: %v", err)
	}
}

func TestRequestDrops(t *testing.T) {
	k := testKeys(t, key1)
	id, node := make([]byte, 16), make([]byte, 16)
	tests := []struct {
		name string
		typ  Type
		body any
	}{
		{"short ID", TypeRequest, requestBody{ID: id[:8], Target: node, Action: 1, Query: "X"}},
		{"short target", TypeRequest, requestBody{ID: id, Target: node[:3], Action: 1, Query: "X"}},
		{"unknown action", TypeRequest, requestBody{ID: id, Target: node, Action: 9, Query: "X"}},
		{"empty query", TypeRequest, requestBody{ID: id, Target: node, Action: 1}},
		{"long query", TypeRequest, requestBody{ID: id, Target: node, Action: 1, Query: strings.Repeat("x", MaxRequestQuery+1)}},
		{"unknown status", TypeReply, replyBody{ID: id, To: node, Status: 200}},
		{"long message", TypeReply, replyBody{ID: id, To: node, Message: strings.Repeat("x", MaxReplyMessage+1)}},
		{"short reply ID", TypeReply, replyBody{ID: id[:1], To: node}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := build(tt.typ, mustCBOR(t, tt.body), k)
			if _, err := NewDecoder(k).Decode(b); ReasonOf(err) != ReasonBadField {
				t.Errorf("%s: %v, want bad_field", tt.name, err)
			}
		})
	}
	for _, body := range []any{
		requestBody{ID: id, Target: node, Action: 1, Query: "A\x1b[2J"},
		replyBody{ID: id, To: node, Message: "no\u009b"},
		replyBody{ID: id, To: node, Path: "/media/\x07"},
	} {
		typ := TypeRequest
		if _, ok := body.(replyBody); ok {
			typ = TypeReply
		}
		if _, err := NewDecoder(k).Decode(build(typ, mustCBOR(t, body), k)); ReasonOf(err) != ReasonControlChar {
			t.Errorf("%+v: %v, want control_char", body, err)
		}
	}
}

func TestRequestFresh(t *testing.T) {
	now := time.Now()
	for _, tt := range []struct {
		sent time.Time
		want bool
	}{
		{now, true},
		{now.Add(-29 * time.Second), true},
		{now.Add(29 * time.Second), true},
		{now.Add(-31 * time.Second), false},
		{now.Add(time.Hour), false},
	} {
		r := Request{Sent: tt.sent}
		if got := r.Fresh(now); got != tt.want {
			t.Errorf("sent %v ago: fresh %v, want %v", now.Sub(tt.sent), got, tt.want)
		}
	}
}

func mustCBOR(t *testing.T, v any) []byte {
	t.Helper()
	b, err := encMode.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
