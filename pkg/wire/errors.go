package wire

import (
	"errors"
	"fmt"
)

// Reason says why a datagram (or an assembled generation) was dropped, so
// that callers can count each reason separately.
type Reason uint8

// Drop reasons produced by this package.
const (
	ReasonNone           Reason = iota
	ReasonTooShort              // shorter than header (+ tag)
	ReasonTooLarge              // longer than MaxDatagram
	ReasonBadMagic              // not our protocol
	ReasonBadVersion            // a version we do not speak
	ReasonUntagged              // we require a tag, the datagram has none
	ReasonUnexpectedTag         // tagged, but we have no key configured
	ReasonUnknownKey            // tagged with a key ID we do not have
	ReasonBadTag                // tag does not verify
	ReasonBadBody               // body is not the CBOR we expect
	ReasonBadField              // a decoded value breaks a limit or rule
	ReasonUnknownType           // a message type we do not know
	ReasonDuplicate             // sequence number already seen (the other address family's copy, or a replay)
	ReasonTooOld                // sequence number older than the replay window
	ReasonHaveGeneration        // announce of the generation already applied (an answer meant for another querier)
	ReasonOldGeneration         // announce older than the generation applied
	ReasonInconsistent          // chunk disagrees with the others of its generation
	ReasonTooManyDisks          // a generation exceeds MaxDisks (or the assembler's limit)
	ReasonPendingFull           // no room to hold another incomplete generation
	ReasonBadDigest             // complete generation does not match its digest
	ReasonBadInventory          // complete generation lists one disk name twice
	ReasonControlChar           // a name, path or identifier holds a C0 or C1 control character
	ReasonUnkeyedRequest        // a request or reply without a tag: never acted on
	ReasonNoBase                // a delta against a generation we do not hold: recovered by query
	numReasons
)

var reasonNames = [numReasons]string{
	ReasonNone:           "none",
	ReasonTooShort:       "too_short",
	ReasonTooLarge:       "too_large",
	ReasonBadMagic:       "bad_magic",
	ReasonBadVersion:     "bad_version",
	ReasonUntagged:       "untagged",
	ReasonUnexpectedTag:  "unexpected_tag",
	ReasonUnknownKey:     "unknown_key",
	ReasonBadTag:         "bad_tag",
	ReasonBadBody:        "bad_body",
	ReasonBadField:       "bad_field",
	ReasonUnknownType:    "unknown_type",
	ReasonDuplicate:      "duplicate",
	ReasonTooOld:         "too_old",
	ReasonHaveGeneration: "have_generation",
	ReasonOldGeneration:  "old_generation",
	ReasonInconsistent:   "inconsistent_chunk",
	ReasonTooManyDisks:   "too_many_disks",
	ReasonPendingFull:    "pending_full",
	ReasonBadDigest:      "bad_digest",
	ReasonBadInventory:   "bad_inventory",
	ReasonControlChar:    "control_char",
	ReasonUnkeyedRequest: "unkeyed_request",
	ReasonNoBase:         "no_base",
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Reasons lists every reason but ReasonNone, for counters that show zeros too.
func Reasons() []Reason {
	out := make([]Reason, 0, numReasons-1)
	for r := ReasonNone + 1; r < numReasons; r++ {
		out = append(out, r)
	}
	return out
}

// DropError is the error of everything that drops a datagram.
type DropError struct {
	Reason Reason
	Err    error // detail; may be nil
}

func (e *DropError) Error() string {
	if e.Err == nil {
		return "drop: " + e.Reason.String()
	}
	return "drop: " + e.Reason.String() + ": " + e.Err.Error()
}

func (e *DropError) Unwrap() error { return e.Err }

func drop(r Reason, format string, args ...any) error {
	return &DropError{Reason: r, Err: fmt.Errorf(format, args...)}
}

// ReasonOf returns the drop reason err carries, ReasonBadBody for other
// errors and ReasonNone for nil.
func ReasonOf(err error) Reason {
	if err == nil {
		return ReasonNone
	}
	var de *DropError
	if errors.As(err, &de) {
		return de.Reason
	}
	return ReasonBadBody
}
