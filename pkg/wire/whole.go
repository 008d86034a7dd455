package wire

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// What other transports than multicast datagrams need from this package:
// an inventory carried whole (the gossip network's reliable channel, see
// docs/protocol.md "Beyond one link"), the node-name rule, and keys derived
// from the key file's secrets. Kept in this file so the datagram code is
// untouched.

// wholeDecMode decodes a whole inventory: an array of up to MaxDisks
// entries, each checked as an announce's entry is.
var wholeDecMode = must(cbor.DecOptions{
	DupMapKey:         cbor.DupMapKeyEnforcedAPF,
	MaxNestedLevels:   8,
	MaxArrayElements:  MaxDisks,
	MaxMapPairs:       32,
	IndefLength:       cbor.IndefLengthForbidden,
	TagsMd:            cbor.TagsForbidden,
	UTF8:              cbor.UTF8RejectInvalid,
	FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
}.DecMode())

// Whole returns the inventory as one CBOR array of its entries, the same
// bytes an announce's chunks carry, so its digest is the same.
func (inv *Inventory) Whole() []byte {
	raw := make([]cbor.RawMessage, len(inv.entries))
	for i, e := range inv.entries {
		raw[i] = e
	}
	return must(encMode.Marshal(raw))
}

// DecodeWhole decodes and checks an inventory made by Whole: at most
// MaxDisks entries, each within the limits of an announce's entry, no disk
// name twice. It returns the disks and the digest of the entries.
func DecodeWhole(b []byte) ([]Disk, Digest, error) {
	var raw []cbor.RawMessage
	if err := wholeDecMode.Unmarshal(b, &raw); err != nil {
		return nil, Digest{}, &DropError{ReasonBadBody, fmt.Errorf("inventory: %w", err)}
	}
	disks := make([]Disk, len(raw))
	entries := make([][]byte, len(raw))
	seen := make(map[string]bool, len(raw))
	for i, r := range raw {
		if len(r) > MaxDiskEntry {
			return nil, Digest{}, drop(ReasonBadField, "disk entry of %d bytes", len(r))
		}
		if err := decMode.Unmarshal(r, &disks[i]); err != nil {
			return nil, Digest{}, &DropError{ReasonBadBody, fmt.Errorf("inventory disk %d: %w", i, err)}
		}
		if err := disks[i].validate(); err != nil {
			return nil, Digest{}, err
		}
		if seen[disks[i].Name] {
			return nil, Digest{}, drop(ReasonBadInventory, "disk %q twice", disks[i].Name)
		}
		seen[disks[i].Name] = true
		entries[i] = r
	}
	return disks, digestOf(entries), nil
}

// CheckName applies the datagrams' rule for node names (at most
// MaxNodeName bytes, no control character) to a name from elsewhere.
func CheckName(s string) error { return checkName(s) }

// Derive returns one key of size bytes per secret of the keyring, the
// sending key first, each HKDF-SHA256(secret, info): a transport that
// wants keys of its own (AES keys for the gossip network) gets them from
// the same file, and rotates with it.
func (k *Keyring) Derive(info string, size int) ([][]byte, error) {
	if k == nil {
		return nil, nil
	}
	out := make([][]byte, 0, len(k.keys))
	for _, kk := range k.keys {
		b, err := hkdf.Key(sha256.New, kk.secret, nil, info, size)
		if err != nil {
			return nil, fmt.Errorf("derive key %d: %w", kk.id, err)
		}
		out = append(out, b)
	}
	return out, nil
}
