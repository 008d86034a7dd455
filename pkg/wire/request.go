package wire

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Requests ask one node to act (mount or unmount one of its disks) and
// its reply says how that went. They exist only on a keyed network: an
// Encoder without keys refuses to make one and a decoder drops an untagged
// one (ReasonUnkeyedRequest), whatever its own keys. See docs/protocol.md,
// "Requests".

// Request limits.
const (
	RequestIDSize     = 16
	MaxRequestQuery   = MaxLabel // a label or UUID
	MaxReplyMessage   = 256
	RequestClockSkew  = 30 * time.Second // how far a request's time may be from the receiver's
	MaxRequestPathLen = MaxMountPath
)

// Action is what a request asks for.
type Action uint8

// Actions.
const (
	ActionMount   Action = 1
	ActionUnmount Action = 2
)

func (a Action) String() string {
	switch a {
	case ActionMount:
		return "mount"
	case ActionUnmount:
		return "unmount"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Request asks Target to act on the disk Query names (label or UUID).
type Request struct {
	ID     [RequestIDSize]byte
	Target NodeID
	Action Action
	Query  string
	RW     bool
	UID    uint32    // the local user the requesting daemon vouches for
	Sent   time.Time // the requester's clock, to the millisecond
}

// Status is a reply's outcome.
type Status uint8

// Reply statuses; the message says the rest.
const (
	StatusOK             Status = 0
	StatusNotAllowed     Status = 1 // the owner's rules refuse it
	StatusNotPresent     Status = 2
	StatusAlreadyMounted Status = 3 // Path says where
	StatusBusy           Status = 4
	StatusNotOurs        Status = 5 // unmount of a mount diskd did not make
	StatusNotMounted     Status = 6
	StatusRateLimited    Status = 7
	StatusFailed         Status = 8
	StatusNotFound       Status = 9 // no such disk on the owner
	maxStatus                   = StatusNotFound
)

// Reply answers a request.
type Reply struct {
	ID      [RequestIDSize]byte
	To      NodeID // the requester
	Status  Status
	Path    string // the mount point (mounted, unmounted, or already mounted)
	Message string // one line for the user
}

// ErrUnkeyed is returned when a request is made on an unauthenticated network.
var ErrUnkeyed = errors.New("remote requests need an authenticated network (--key-file on every machine)")

type requestBody struct {
	ID     []byte `cbor:"1,keyasint"`
	Target []byte `cbor:"2,keyasint"`
	Action uint8  `cbor:"3,keyasint"`
	Query  string `cbor:"4,keyasint"`
	RW     bool   `cbor:"5,keyasint,omitempty"`
	UID    uint32 `cbor:"6,keyasint"`
	Sent   int64  `cbor:"7,keyasint"` // Unix milliseconds
}

type replyBody struct {
	ID      []byte `cbor:"1,keyasint"`
	To      []byte `cbor:"2,keyasint"`
	Status  uint8  `cbor:"3,keyasint"`
	Path    string `cbor:"4,keyasint,omitempty"`
	Message string `cbor:"5,keyasint,omitempty"`
}

// Request encodes a request; it fails on an unauthenticated network.
func (e *Encoder) Request(gen uint64, r Request) ([]byte, error) {
	if e.keys == nil {
		return nil, ErrUnkeyed
	}
	if len(r.Query) > MaxRequestQuery || !utf8.ValidString(r.Query) {
		return nil, fmt.Errorf("request for %q: names are at most %d bytes of UTF-8", r.Query, MaxRequestQuery)
	}
	return e.seal(TypeRequest, gen, requestBody{ID: r.ID[:], Target: r.Target[:], Action: uint8(r.Action),
		Query: r.Query, RW: r.RW, UID: r.UID, Sent: r.Sent.UnixMilli()}), nil
}

// Reply encodes a reply; it fails on an unauthenticated network. A path or
// message over its limit is cut.
func (e *Encoder) Reply(gen uint64, r Reply) ([]byte, error) {
	if e.keys == nil {
		return nil, ErrUnkeyed
	}
	return e.seal(TypeReply, gen, replyBody{ID: r.ID[:], To: r.To[:], Status: uint8(r.Status),
		Path: clipUTF8(r.Path, MaxRequestPathLen), Message: clipUTF8(r.Message, MaxReplyMessage)}), nil
}

func clipUTF8(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	for len(s) > n {
		_, w := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-w]
	}
	return s
}

// decodeRequest decodes a request or reply body of an opened datagram.
func decodeRequest(p *Packet, body []byte) error {
	if p.KeyID == 0 {
		return drop(ReasonUnkeyedRequest, "%v", p.Type)
	}
	switch p.Type {
	case TypeRequest:
		var rb requestBody
		if err := decMode.Unmarshal(body, &rb); err != nil {
			return &DropError{ReasonBadBody, fmt.Errorf("request: %w", err)}
		}
		if len(rb.ID) != RequestIDSize || len(rb.Target) != len(NodeID{}) {
			return drop(ReasonBadField, "request ID of %d bytes, target of %d", len(rb.ID), len(rb.Target))
		}
		if a := Action(rb.Action); a != ActionMount && a != ActionUnmount {
			return drop(ReasonBadField, "request %v", a)
		}
		if rb.Query == "" || len(rb.Query) > MaxRequestQuery {
			return drop(ReasonBadField, "request query of %d bytes", len(rb.Query))
		}
		if hasControl(rb.Query) {
			return drop(ReasonControlChar, "request query %q", rb.Query)
		}
		r := &Request{Target: NodeID(rb.Target), Action: Action(rb.Action), Query: rb.Query,
			RW: rb.RW, UID: rb.UID, Sent: time.UnixMilli(rb.Sent)}
		copy(r.ID[:], rb.ID)
		p.Request = r
	case TypeReply:
		var rb replyBody
		if err := decMode.Unmarshal(body, &rb); err != nil {
			return &DropError{ReasonBadBody, fmt.Errorf("reply: %w", err)}
		}
		if len(rb.ID) != RequestIDSize || len(rb.To) != len(NodeID{}) {
			return drop(ReasonBadField, "reply ID of %d bytes, to of %d", len(rb.ID), len(rb.To))
		}
		if Status(rb.Status) > maxStatus || len(rb.Path) > MaxRequestPathLen || len(rb.Message) > MaxReplyMessage {
			return drop(ReasonBadField, "reply status %d, path of %d bytes, message of %d", rb.Status, len(rb.Path), len(rb.Message))
		}
		// Both end up on the asker's terminal.
		if hasControl(rb.Path) || hasControl(rb.Message) {
			return drop(ReasonControlChar, "reply path %q, message %q", rb.Path, rb.Message)
		}
		r := &Reply{To: NodeID(rb.To), Status: Status(rb.Status), Path: rb.Path, Message: rb.Message}
		copy(r.ID[:], rb.ID)
		p.Reply = r
	}
	return nil
}

// Fresh reports whether a request's time is within RequestClockSkew of now:
// a captured request replayed later is refused even by a receiver that has
// forgotten its ID.
func (r *Request) Fresh(now time.Time) bool {
	d := now.Sub(r.Sent)
	return d < RequestClockSkew && d > -RequestClockSkew
}
