package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/spf13/pflag"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/gossip"
	"github.com/diskd/diskd/pkg/mounter"
	"github.com/diskd/diskd/pkg/peer"
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
	// Mounting on request (diskctl mount): nothing is mountable unless a
	// rule allows it.
	MountDir     string   `toml:"mount_dir"`
	MountAllow   []string `toml:"mount_allow"`
	MountAllowRW []string `toml:"mount_allow_rw"`
	// Network is the peer network ([network] in the file). Both families
	// off means this node neither announces nor listens.
	Network peer.Config `toml:"network"`
	// The gossip path, on when join is not empty; keyed with
	// network.key_file. Its keys (join, gossip_port, ...) are top-level,
	// named as the flags are.
	gossip.Config
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
		Socket:       api.DefaultSocketPath(),
		LogLevel:     "info",
		IdleTimeout:  Duration{5 * time.Minute},
		Network:      peer.DefaultConfig(),
		Config:       gossip.DefaultConfig(),
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
	return nil
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
	fs.StringVar(&c.MountDir, "mount-dir", c.MountDir, "directory that diskctl mount puts mount points in")
	fs.StringArrayVar(&c.MountAllow, "mount-allow", c.MountAllow, "allow mounting (read-only) disks whose label or UUID matches this glob, on request (repeatable)")
	fs.StringArrayVar(&c.MountAllowRW, "mount-allow-rw", c.MountAllowRW, "allow mounting read-write, when asked with --rw, disks whose label or UUID matches this glob (repeatable)")
	c.Network.AddFlags(fs)
	c.Config.AddFlags(fs)
}

// writeConfig prints c as a config file (--print-config).
func writeConfig(w io.Writer, c Config) error {
	fmt.Fprintln(w, "# diskd effective configuration (defaults, then the config file, then flags)")
	return toml.NewEncoder(w).Encode(c)
}
