// Package wire owns the peer network's datagram format: encoding, decoding,
// authentication, chunking of inventories and their reassembly, and delta
// announces (a change against the last complete generation). It does no
// I/O; package peer moves its datagrams over multicast sockets.
//
// The specification is docs/protocol.md, and it is normative: byte layout,
// message types and their bodies, limits and drop reasons are defined
// there, and where this package disagrees with it, this package is wrong.
// This comment only maps the specification onto the code:
//
//   - codec.go: the fixed 48-byte header, the CBOR bodies of heartbeat (1),
//     announce (2), query (3) and goodbye (4), the Encoder that numbers and
//     tags datagrams and the Decoder that checks size, magic, version and
//     tag before it decodes anything else. Inventory is a local disk list
//     encoded once, sorted by name, with its digest.
//   - disk.go: a disk entry, its field limits and the control-character
//     rules (what a sender trims, what a receiver drops).
//   - assemble.go: Assembler puts announce chunks together into complete
//     generations, never backwards, within bounded memory, and keeps the
//     last complete inventory of each node as the base deltas apply to.
//   - delta.go: the delta announce (8): Diff and Inventory.Apply as pure
//     functions, its encoding (one datagram or none) and decoding.
//   - request.go: request (5) and reply (6), keyed networks only.
//   - relay.go: the relayed announce (7).
//   - whole.go: an inventory carried whole over other transports (gossip).
//   - keys.go and replay.go: the key file, the truncated HMAC tag, the
//     replay window.
//   - errors.go: every drop reason (DropError), each counted by package
//     peer as drop_REASON.
package wire
