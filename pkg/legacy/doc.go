// Package legacy is diskd's bridge to the original Perl diskd (App::Diskd
// 0.01, 2013): its wire format, and a service that listens on and announces
// to its multicast group so old and new machines see each other's disks
// while a site moves over.
//
// # Wire format (as the original sends it)
//
// UDP over IPv4 to 230.1.2.3 port 32003, TTL 2, from port 32003. One
// datagram per announcement, at most MaxDatagram (1500) bytes: "diskd:"
// directly followed by YAML::XS::Dump of a list of [uuid, label, device]
// (block style, two-space indentation, libyaml's quoting, "~" for a
// missing value, lines folded past column 80):
//
//	diskd:---
//	- - 1111aaaa-0000-4000-8000-00000000000a
//	  - My Backup Disk
//	  - /dev/sdb1
//	- - 3333-AAAA
//	  - ~
//	  - /dev/sdc1
//
// or "diskd:--- []" for no disks. A peer is known only by the datagram's
// source address; each datagram replaces everything known of it. The
// original announces 5 s after its start and every 600 s, and never
// expires a host. Labels arrive in blkid's "M-x"/"^x" notation or encoded
// twice (DecodeLabel).
//
// # What the bridge does (docs/protocol.md, "Legacy bridge")
//
// Parse accepts exactly that form and refuses everything else with a
// counted Reason; it reads no YAML feature the original does not write.
// Encode writes our present local disks byte for byte as the original's
// dumper would (golden files made by YAML::XS itself). The Service sends
// them at start, on change (at most every ChangeGap) and every
// ResendInterval; gives each legacy peer a node of its own ("legacy" and
// its IPv4 address in hex, which no diskd node ID can be), named by
// reverse DNS when that answers quickly; and marks it offline after 3 of
// its announce periods of silence.
package legacy
