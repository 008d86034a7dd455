// Package api holds the types of diskd's local API: what the Unix socket's
// JSON form and the D-Bus client carry, and what diskctl renders. Both
// clients produce these same values, so diskctl prints the same output
// whichever way it reached the daemon. Disks and nodes are the domain types
// of package disk.
package api

import (
	"time"

	"github.com/diskd/diskd/pkg/disk"
)

// Status is the daemon's self-report (`status`).
type Status struct {
	Version   string      `json:"version"`
	NodeID    disk.NodeID `json:"node_id"`
	NodeName  string      `json:"node_name"`
	StartTime time.Time   `json:"start_time"`
	UptimeSec float64     `json:"uptime_sec"`
	StateDir  string      `json:"state_dir"`
	Socket    string      `json:"socket"`
	Scan      ScanStatus  `json:"scan"`
	Counts    Counts      `json:"counts"`
	// StoreCounters: what the table's bounds did (evictions, truncations,
	// refusals; see store.Stats), by name.
	StoreCounters map[string]uint64 `json:"store_counters,omitempty"`
	Network       *NetStatus        `json:"network,omitempty"`
	Gossip        *GossipStatus     `json:"gossip,omitempty"`
	DBus          string            `json:"dbus"`               // "connected to system bus", "off", or the error
	Problems      []string          `json:"problems,omitempty"` // one line each: things an admin should fix

	// Legacy is the bridge to the original Perl diskd, when it is on.
	Legacy *LegacyStatus `json:"legacy,omitempty"`
}

// ScanStatus reports the local inventory's freshness.
type ScanStatus struct {
	LastScan      time.Time `json:"last_scan"`
	LastDuration  float64   `json:"last_duration_sec"`
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
	FullScans     uint64    `json:"full_scans"`
	DeviceProbes  uint64    `json:"device_probes"`
	Uevents       uint64    `json:"uevents"`
	MountUpdates  uint64    `json:"mount_updates"`
	Blkid         string    `json:"blkid"`
	BlkidTimeout  float64   `json:"blkid_timeout_sec"`
	UeventsActive bool      `json:"uevents_active"`
}

// Counts sizes the table.
type Counts struct {
	Nodes        int `json:"nodes"`
	NodesOnline  int `json:"nodes_online"`
	Disks        int `json:"disks"`
	DisksPresent int `json:"disks_present"`
	LocalPresent int `json:"local_present"`
}

// NetStatus reports the peer network.
type NetStatus struct {
	Authenticated bool              `json:"authenticated"`
	Groups        []string          `json:"groups"`
	Interfaces    []string          `json:"interfaces"`
	Counters      map[string]uint64 `json:"counters"` // sent/received datagrams and bytes, every drop reason
}

// LegacyStatus reports the bridge to the original Perl diskd. The legacy
// network is unauthenticated by nature (there is no field to say so).
type LegacyStatus struct {
	Group       string            `json:"group"`
	Interfaces  []string          `json:"interfaces"`
	Peers       int               `json:"peers"`
	PeersOnline int               `json:"peers_online"`
	Counters    map[string]uint64 `json:"counters"` // sent/received, lists applied, every drop reason
}

// GossipStatus reports the gossip path (present when --join is given).
type GossipStatus struct {
	Keyed      bool              `json:"keyed"`
	Profile    string            `json:"profile"`
	Advertise  string            `json:"advertise"`
	Join       []string          `json:"join"`
	Joined     bool              `json:"joined"`      // a join succeeded once
	Members    int               `json:"members"`     // alive and suspect, this node included
	Suspect    int               `json:"suspect"`     // suspected of failure now
	Health     int               `json:"health"`      // memberlist's awareness score: 0 is healthy, higher is worse
	UDPBlocked bool              `json:"udp_blocked"` // UDP probes failed while TCP worked, within 2 minutes
	Counters   map[string]uint64 `json:"counters"`    // joins, notices, fetches, every drop reason
}

// Localhost answers `localhost`.
type Localhost struct {
	NodeID    disk.NodeID `json:"node_id"`
	Name      string      `json:"name"`
	Addresses []string    `json:"addresses"`
}

// PingResult answers `ping`.
type PingResult struct {
	Answered int `json:"answered"`
}

// WatchEvent is one line of `watch --json`.
type WatchEvent struct {
	Kind string     `json:"kind"` // added, changed, forgotten, node-changed, node-forgotten
	Time time.Time  `json:"time"`
	Disk *disk.Disk `json:"disk,omitempty"`
	Node *disk.Node `json:"node,omitempty"`
}
