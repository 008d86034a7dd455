// Package wire owns the peer network's datagram format: encoding, decoding,
// authentication, chunking of inventories and their reassembly. It does no
// I/O; package peer moves its datagrams over multicast sockets. This comment
// is the normative summary; docs/protocol.md says the same at more length,
// with the reasons.
//
// # Datagram
//
// Every datagram is one UDP payload of at most MaxDatagram (1400) bytes, so
// it is never fragmented on an Ethernet path (1500 MTU minus IPv6, UDP and
// tunnel headroom). Layout, integers big-endian:
//
//	offset size field
//	     0    4 magic "DSKD"
//	     4    1 version (1)
//	     5    1 message type (1 heartbeat, 2 announce, 3 query, 4 goodbye)
//	     6    1 flags: bit 0 set = the datagram ends with an authentication tag;
//	            other bits are reserved, sent as 0 and ignored
//	     7    1 key ID of the tag (1-255), 0 when untagged
//	     8   16 sender node ID (disk.NodeID's 32 hex digits as 16 raw bytes)
//	    24    8 instance ID: new at every start of the sender
//	    32    8 sequence number: +1 for each distinct datagram of an instance
//	    40    8 the sender's inventory generation
//	    48    n body: exactly one CBOR map (RFC 8949), integer keys
//	  48+n   16 tag, when flags bit 0: HMAC-SHA256(key, bytes 0..48+n),
//	            first 16 bytes
//
// The instance ID is the sender's start time in Unix milliseconds shifted
// left 16 bits, plus 16 random bits: unique per start, and ordered, so a
// receiver can tell an older instance's replayed datagrams from a restart.
//
// # Bodies
//
// Heartbeat (every interval, default 10 s): {1: node name (text), 2: digest
// (8-byte bstr), 3: heartbeat interval in ms (uint), 4: addresses (array of
// 4- or 16-byte bstr, optional)}.
//
// Announce (the inventory of one generation, in chunks): {1: node name, 2:
// digest, 3: chunk index (0-based), 4: chunk count, 5: disks (array of disk
// maps)}. A disk map: {1: kernel name, 2: device path, 3: "MAJ:MIN", 4: UUID,
// 5: PARTUUID, 6: label, 7: partition label, 8: type, 9: usage, 10: size in
// bytes, 11: read-only (bool), 12: removable (bool), 13: mountpoints (array
// of text)}; every key but 1 is omitted when empty or false. Disks are sorted
// by name and packed greedily into chunks; one disk entry never exceeds
// MaxDiskEntry bytes (a sender drops trailing mountpoints to stay within), so
// every inventory of any size fits datagrams of MaxDatagram bytes.
//
// The digest is the first 8 bytes of SHA-256 over the concatenated disk
// entries, as encoded, in order. It is not a security feature (the tag is);
// it lets a receiver check that the chunks it put together are the
// generation the sender described, and notice a divergence a heartbeat
// reveals.
//
// Query: {1: target node IDs (array of 16-byte bstr, at most MaxQueryTargets;
// absent or empty = every node)}. Goodbye: {} (sent 2-3 times on a clean
// stop).
//
// # Authentication and replay
//
// With a key file (see ParseKeys) every datagram is tagged with the first
// key; up to two keys are accepted, so keys can be rotated without a flag
// day. A receiver checks size, magic, version and the tag before it decodes
// anything else, and drops datagrams whose tagging does not match its own
// configuration (tagged or not, known key, valid tag). The tag is truncated
// to 16 bytes: 128 bits leave an online forger no chance and save 16 bytes
// in every heartbeat (RFC 2104 section 5, NIST SP 800-107). A
// receiver keeps a ReplayWindow of WindowSize sequence numbers per (node,
// instance) and ignores older instances of a node while the newer one is
// alive.
//
// # Limits
//
// The CBOR decoder runs with hard limits (nesting, array and map sizes, no
// indefinite lengths, no tags, no duplicate keys, valid UTF-8), and decoded
// values are checked against the Max* constants; any violation drops the
// whole datagram with a typed reason (DropError). Node names, disk names,
// device paths, MAJ:MIN, UUIDs, types, usages and mountpoints must hold no
// C0 control (U+0000-U+001F), DEL or C1 control (U+0080-U+009F)
// (ReasonControlChar); labels and partition labels may hold any character
// but NUL, as a real disk's label may, and are escaped wherever printed. A
// sender never makes what a receiver drops: control characters in its node
// name go as U+FFFD, a mountpoint (or type) holding one is left out, a disk
// whose identifier holds one is not announced. Assembler bounds chunks
// and disks per generation, pending generations per node and in total, and
// the memory they hold.
//
// # Versioning
//
// Unknown map keys are ignored, so later revisions of version 1 may add
// optional keys (never reusing a number). Unknown message types are dropped
// and counted. Anything else - a header change, a new meaning for a key -
// needs a new version number; receivers drop versions they do not speak.
package wire
