package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/spf13/pflag"

	"github.com/diskd/diskd/pkg/authz"
	"github.com/diskd/diskd/pkg/control"
	"github.com/diskd/diskd/pkg/gossip"
	"github.com/diskd/diskd/pkg/legacy"
	"github.com/diskd/diskd/pkg/localsock"
	"github.com/diskd/diskd/pkg/mounter"
	"github.com/diskd/diskd/pkg/peer"
	"github.com/diskd/diskd/pkg/store"
)

// DefaultConfigFile is read when --config is not given; a missing default
// file is not an error (flags and built-in defaults apply).
const DefaultConfigFile = "/etc/diskd/diskd.conf"

// Config is diskd's whole configuration: built-in defaults, then the
// config file (TOML), then command-line flags, each overriding the last.
type Config struct {
	NodeName     string   `toml:"node_name"`
	StateDir     string   `toml:"state_dir"`
	Socket       string   `toml:"socket"`
	Devices      []string `toml:"devices"`
	Exclude      []string `toml:"exclude"`
	Blkid        string   `toml:"blkid"`
	BlkidTimeout Duration `toml:"blkid_timeout"`
	ScanInterval Duration `toml:"scan_interval"`
	Uevents      bool     `toml:"uevents"`
	DBus         string   `toml:"dbus"`
	LogLevel     string   `toml:"log_level"`
	IdleTimeout  Duration `toml:"session_idle_timeout"`
	WriteTimeout Duration `toml:"session_write_timeout"`
	// MaxSessionsPerUser bounds each non-root uid's socket sessions.
	MaxSessionsPerUser int `toml:"max_sessions_per_user"`
	// AdminGroup's members may refresh, announce and ping ("" for root
	// only).
	AdminGroup string `toml:"admin_group"`
	// Mounting on request (diskctl mount): nothing is mountable unless a
	// rule allows it.
	MountDir     string   `toml:"mount_dir"`
	MountAllow   []string `toml:"mount_allow"`
	MountAllowRW []string `toml:"mount_allow_rw"`
	// Legacy bridges to the original Perl diskd (App::Diskd 0.01) on its
	// own multicast group, on the peer network's interfaces; off unless set.
	Legacy         bool     `toml:"legacy"`
	LegacyGroup    string   `toml:"legacy_group"`
	LegacyPort     int      `toml:"legacy_port"`
	LegacyInterval Duration `toml:"legacy_interval"`
	// MaxDisks and HistoryPerDisk bound the remembered table (store.Options).
	MaxDisks       int `toml:"max_disks"`
	HistoryPerDisk int `toml:"history_per_disk"`
	// Network is the peer network ([network] in the file). Both families
	// off means this node neither announces nor listens.
	Network NetworkConfig `toml:"network"`
	// The gossip path, on when join is not empty; keyed with
	// network.key_file. Its keys (join, gossip_port, ...) are top-level,
	// named as the flags are.
	GossipConfig
}

// NetworkConfig is peer.Config with its config-file keys: the same fields
// in the same order, so each converts to the other (a field added to
// peer.Config stops the build here until it has its key). Enter and
// Instance are set by the wiring, never by the file.
type NetworkConfig struct {
	Groups             []string                    `toml:"groups"`
	Port               int                         `toml:"port"`
	Interfaces         []string                    `toml:"interfaces"`
	TTL                int                         `toml:"ttl"`
	KeyFile            string                      `toml:"key_file"`
	HeartbeatInterval  time.Duration               `toml:"heartbeat_interval"`
	IPv4               bool                        `toml:"ipv4"`
	IPv6               bool                        `toml:"ipv6"`
	AnnouncesPerMinute int                         `toml:"announces_per_minute"`
	MaxPeers           int                         `toml:"max_peers"`
	SourceRate         float64                     `toml:"source_rate"`
	SourceBurst        float64                     `toml:"source_burst"`
	Enter              func(fn func() error) error `toml:"-"`
	Instance           uint64                      `toml:"-"`
	IgnoreDeltas       bool                        `toml:"-"`
}

// GossipConfig is gossip.Config with its config-file keys, top-level and
// named as the flags are; it converts as NetworkConfig does.
type GossipConfig struct {
	Join      []string `toml:"join"`
	Port      int      `toml:"gossip_port"`
	Bind      string   `toml:"gossip_bind"`
	Advertise string   `toml:"advertise"`
	Profile   string   `toml:"gossip_profile"`
	Insecure  bool     `toml:"gossip_insecure"`
}

// Duration is a time.Duration written as "15s" in the config file.
type Duration struct{ time.Duration }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// defaultConfig returns the built-in defaults for whoever runs diskd: root
// gets the system paths, anyone else per-user ones, so `make run` works
// unprivileged.
func defaultConfig() Config {
	c := Config{
		Blkid:        "blkid",
		BlkidTimeout: Duration{15 * time.Second},
		ScanInterval: Duration{5 * time.Minute},
		Uevents:      true,
		Socket:       localsock.DefaultPath(),
		LogLevel:     "info",
		IdleTimeout:  Duration{control.DefaultIdleTimeout},
		WriteTimeout: Duration{control.DefaultWriteTimeout},
		AdminGroup:   authz.DefaultAdminGroup,

		MaxSessionsPerUser: control.DefaultMaxSessionsPerUser,
		Network:            NetworkConfig(peer.DefaultConfig()),

		LegacyGroup:    legacy.DefaultGroup,
		LegacyPort:     legacy.DefaultPort,
		LegacyInterval: Duration{legacy.DefaultPeerInterval},

		MaxDisks:       store.DefaultMaxDisks,
		HistoryPerDisk: store.DefaultHistoryPerDisk,

		GossipConfig: GossipConfig(gossip.DefaultConfig()),
		// Empty rather than nil, so --print-config shows every key.
		Devices:      []string{},
		Exclude:      []string{},
		MountDir:     mounter.DefaultDir,
		MountAllow:   []string{},
		MountAllowRW: []string{},
	}
	c.Network.Interfaces = []string{}
	c.NodeName, _ = os.Hostname()
	if os.Geteuid() == 0 {
		c.StateDir = "/var/lib/diskd"
		c.DBus = "system"
	} else {
		c.StateDir = userStateDir()
		c.DBus = "off"
	}
	return c
}

func userStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "diskd")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "diskd")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("diskd-state-%d", os.Geteuid()))
}

// loadConfigFile overlays path onto c. A missing file is fine only when it
// is the default path; unknown keys are errors, so typos do not pass.
func loadConfigFile(c *Config, path string, explicit bool) error {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !explicit {
			return nil
		}
		return fmt.Errorf("config: %w", err)
	}
	md, err := toml.Decode(string(b), c)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return fmt.Errorf("config %s: unknown option %q", path, und[0].String())
	}
	// A bare number would decode into a time.Duration as nanoseconds.
	durations := durationKeys(reflect.TypeOf(*c), "")
	for _, k := range md.Keys() {
		if durations[k.String()] && md.Type(k...) == "Integer" {
			return fmt.Errorf("config %s: %s: write a duration as a string with its unit, e.g. \"10s\"", path, k)
		}
	}
	return nil
}

// durationKeys lists the config keys of t that decode into a bare
// time.Duration (the Duration type refuses numbers itself).
func durationKeys(t reflect.Type, prefix string) map[string]bool {
	keys := map[string]bool{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		switch {
		case name == "-":
		case f.Type == reflect.TypeFor[time.Duration]():
			keys[prefix+name] = true
		case f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[Duration]():
			sub := prefix // an embedded struct's keys are its parent's
			if name != "" {
				sub = prefix + name + "."
			}
			maps.Copy(keys, durationKeys(f.Type, sub))
		}
	}
	return keys
}

// addFlags binds flags to c's fields, so a flag given overrides the file.
func addFlags(fs *pflag.FlagSet, c *Config) {
	fs.StringVar(&c.NodeName, "node-name", c.NodeName, "name this node announces to its peers (the hostname unless set)")
	fs.StringVar(&c.StateDir, "state-dir", c.StateDir, "directory for the node identity and the state file")
	fs.StringVar(&c.Socket, "socket", c.Socket, "Unix socket for diskctl (ignored when systemd passes one)")
	fs.StringArrayVar(&c.Devices, "devices", c.Devices, "report only devices whose path matches this glob (repeatable)")
	fs.StringArrayVar(&c.Exclude, "exclude", c.Exclude, "never report devices whose path matches this glob (repeatable)")
	fs.StringVar(&c.Blkid, "blkid", c.Blkid, "blkid program (name or path)")
	fs.DurationVar(&c.BlkidTimeout.Duration, "blkid-timeout", c.BlkidTimeout.Duration, "kill a blkid run after this long")
	fs.DurationVar(&c.ScanInterval.Duration, "scan-interval", c.ScanInterval.Duration, "full rescan period (uevents trigger scans in between)")
	fs.BoolVar(&c.Uevents, "uevents", c.Uevents, "listen to kernel uevents (false: periodic scans only)")
	fs.StringVar(&c.DBus, "dbus", c.DBus, "D-Bus API on the system or session bus, a bus address, or off")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.DurationVar(&c.IdleTimeout.Duration, "session-idle-timeout", c.IdleTimeout.Duration, "close socket sessions idle this long")
	fs.DurationVar(&c.WriteTimeout.Duration, "session-write-timeout", c.WriteTimeout.Duration, "close a socket session whose client has not read a reply within this long")
	fs.IntVar(&c.MaxSessionsPerUser, "max-sessions-per-user", c.MaxSessionsPerUser, "socket sessions one user other than root may hold at once")
	fs.StringVar(&c.AdminGroup, "admin-group", c.AdminGroup, "members of this group may refresh, announce and ping (\"\" for root only)")
	fs.StringVar(&c.MountDir, "mount-dir", c.MountDir, "directory that diskctl mount puts mount points in")
	fs.StringArrayVar(&c.MountAllow, "mount-allow", c.MountAllow, "allow mounting (read-only) disks whose label or UUID matches this glob, on request (repeatable)")
	fs.StringArrayVar(&c.MountAllowRW, "mount-allow-rw", c.MountAllowRW, "allow mounting read-write, when asked with --rw, disks whose label or UUID matches this glob (repeatable)")
	fs.IntVar(&c.MaxDisks, "max-disks", c.MaxDisks, "disks remembered at most, present or not, on every machine; the longest gone is forgotten first")
	fs.IntVar(&c.HistoryPerDisk, "history-per-disk", c.HistoryPerDisk, "places a disk remembers (its current one included); the oldest is dropped first")
	n := &c.Network
	fs.StringArrayVar(&n.Groups, "group", n.Groups, "multicast group, IPv4 or IPv6 (repeatable; a family not given keeps its default; IPv6 sends to the link-scope groups with --ttl 1, to the wider ones otherwise)")
	fs.IntVar(&n.Port, "port", n.Port, "UDP port of the peer network")
	fs.StringArrayVar(&n.Interfaces, "interface", n.Interfaces, "network interface to use (repeatable; default: every multicast-capable one)")
	fs.IntVar(&n.TTL, "ttl", n.TTL, "multicast TTL / hop limit (1 stays on the link; higher crosses multicast routers)")
	fs.StringVar(&n.KeyFile, "key-file", n.KeyFile, "file with the network's shared key(s): \"ID SECRET\" lines; authenticates every datagram")
	fs.DurationVar(&n.HeartbeatInterval, "heartbeat-interval", n.HeartbeatInterval, "interval between heartbeats, 1s to 1m; a peer silent for 3 of its intervals (clamped to that range) is offline")
	fs.BoolVar(&n.IPv4, "ipv4", n.IPv4, "use IPv4 multicast")
	fs.BoolVar(&n.IPv6, "ipv6", n.IPv6, "use IPv6 multicast")
	fs.IntVar(&n.AnnouncesPerMinute, "announce-limit", n.AnnouncesPerMinute, "whole-inventory announces per minute caused by local changes too big for one datagram")
	_ = fs.MarkHidden("announce-limit") // for benchmarks that attach disks quickly
	fs.BoolVar(&n.IgnoreDeltas, "debug-ignore-deltas", n.IgnoreDeltas, "drop delta announces as a daemon from before them does (compatibility tests)")
	_ = fs.MarkHidden("debug-ignore-deltas")
	fs.BoolVar(&c.Legacy, "legacy", c.Legacy, "bridge to the original Perl diskd (App::Diskd 0.01): list its peers' disks, announce ours in its format (unauthenticated)")
	fs.StringVar(&c.LegacyGroup, "legacy-group", c.LegacyGroup, "the original's IPv4 multicast group")
	fs.IntVar(&c.LegacyPort, "legacy-port", c.LegacyPort, "the original's UDP port (we send from it too, as it does)")
	fs.DurationVar(&c.LegacyInterval.Duration, "legacy-interval", c.LegacyInterval.Duration, "the original peers' announce period; one silent for 3 is offline")
	_ = fs.MarkHidden("legacy-interval") // the original's is fixed at 600 s; tests shorten it
	g := &c.GossipConfig
	fs.StringArrayVar(&g.Join, "join", g.Join, "join the gossip network through HOST[:PORT] (repeatable; retried until it answers); gossip is on when given")
	fs.IntVar(&g.Port, "gossip-port", g.Port, "gossip port, TCP and UDP")
	fs.StringVar(&g.Bind, "gossip-bind", g.Bind, "address the gossip port listens on")
	fs.StringVar(&g.Advertise, "advertise", g.Advertise, "address (IP[:PORT]) other members reach us at (default: the first private address)")
	fs.StringVar(&g.Profile, "gossip-profile", g.Profile, "gossip timing: lan or wan")
	fs.BoolVar(&g.Insecure, "gossip-insecure", g.Insecure, "allow gossip without --key-file (anyone who reaches the port can join and announce)")
}

// check refuses values outside the bounds the daemon is built for.

// Bounds of the table options: beyond them memory (about 1.5 KiB per
// remembered disk, more per sighting) outgrows any real network.
const (
	maxMaxDisks       = 10_000_000
	maxHistoryPerDisk = 1024
)

// validate refuses option values outside their bounds.
func (c *Config) validate() error {
	if limit := control.DefaultMaxSessions - control.DefaultRootReserve; c.MaxSessionsPerUser < 1 || c.MaxSessionsPerUser > limit {
		return fmt.Errorf("max_sessions_per_user %d: want 1-%d (the sessions not kept for root)", c.MaxSessionsPerUser, limit)
	}
	if w := c.WriteTimeout.Duration; w < 100*time.Millisecond || w > 10*time.Minute {
		return fmt.Errorf("session_write_timeout %v: want 100ms to 10m", w)
	}
	if c.MaxDisks < 1 || c.MaxDisks > maxMaxDisks {
		return fmt.Errorf("max_disks %d: want 1 to %d", c.MaxDisks, maxMaxDisks)
	}
	if c.HistoryPerDisk < 1 || c.HistoryPerDisk > maxHistoryPerDisk {
		return fmt.Errorf("history_per_disk %d: want 1 to %d", c.HistoryPerDisk, maxHistoryPerDisk)
	}
	return nil
}

// writeConfig prints c as a config file (--print-config).
func writeConfig(w io.Writer, c Config) error {
	fmt.Fprintln(w, "# diskd effective configuration (defaults, then the config file, then flags)")
	return toml.NewEncoder(w).Encode(c)
}
