package legacy

import (
	"sync/atomic"
)

type counter int

// Counters; the names are what status shows (after "legacy_" in none: the
// status section is the legacy bridge's own).
const (
	sentDatagrams counter = iota
	sentBytes
	sendFailed
	recvDatagrams
	recvBytes
	listsApplied
	entriesDuplicate
	peersWentOffline
	localNotSent
	dropOwn
	dropNotGroup
	dropDiskdPeer
	dropPeersFull
	dropQueueFull
	dropCoalesced
	numCounters
)

var counterNames = [numCounters]string{
	sentDatagrams:    "sent_datagrams",
	sentBytes:        "sent_bytes",
	sendFailed:       "send_failed",
	recvDatagrams:    "received_datagrams",
	recvBytes:        "received_bytes",
	listsApplied:     "lists_applied",
	entriesDuplicate: "entries_duplicate", // two entries for one device: the first is kept
	peersWentOffline: "peers_went_offline",
	localNotSent:     "local_disks_not_sent", // in the last announce: did not fit 1500 bytes (a gauge)
	dropOwn:          "drop_own",             // our own datagrams, looped back
	dropNotGroup:     "drop_not_group",
	dropDiskdPeer:    "drop_diskd_peer", // from the address of a diskd peer: known through the peer network
	dropPeersFull:    "drop_peers_full",
	dropQueueFull:    "drop_queue_full",
	dropCoalesced:    "drop_coalesced", // replaced by a newer list before it was applied (one a second per peer)
}

type counters struct {
	c    [numCounters]atomic.Uint64
	drop [numReasons]atomic.Uint64
}

func (c *counters) inc(k counter)           { c.c[k].Add(1) }
func (c *counters) add(k counter, n uint64) { c.c[k].Add(n) }
func (c *counters) set(k counter, n uint64) { c.c[k].Store(n) }
func (c *counters) dropped(r Reason)        { c.drop[r].Add(1) }
func (c *counters) get(k counter) uint64    { return c.c[k].Load() }
func (c *counters) getDrop(r Reason) uint64 { return c.drop[r].Load() }

// snapshot names every counter, zeros included, and every parse refusal
// as "drop_REASON".
func (c *counters) snapshot() map[string]uint64 {
	m := make(map[string]uint64, int(numCounters)+int(numReasons))
	for i := range numCounters {
		m[counterNames[i]] = c.c[i].Load()
	}
	for r := ReasonTooBig; r < numReasons; r++ {
		m["drop_"+r.String()] = c.drop[r].Load()
	}
	return m
}
