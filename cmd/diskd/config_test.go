package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestSessionBounds: the session options take values within their bounds
// and refuse the rest with the range, from flags and the file alike.
func TestSessionBounds(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "" accepted
	}{
		{[]string{"--max-sessions-per-user", "1"}, ""},
		{[]string{"--max-sessions-per-user", "960"}, ""},
		{[]string{"--max-sessions-per-user", "0"}, "max_sessions_per_user 0: want 1-960"},
		{[]string{"--max-sessions-per-user", "961"}, "max_sessions_per_user 961: want 1-960"},
		{[]string{"--session-write-timeout", "100ms"}, ""},
		{[]string{"--session-write-timeout", "10ms"}, "session_write_timeout 10ms: want 100ms to 10m"},
		{[]string{"--session-write-timeout", "1h"}, "session_write_timeout 1h0m0s: want 100ms to 10m"},
		{[]string{"--admin-group", ""}, ""},
	} {
		_, err := parseArgs(append([]string{"--config", "/dev/null"}, tc.args...))
		got := ""
		if err != nil {
			got = err.Error()
		}
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%v: %q, want %q", tc.args, got, tc.want)
		}
	}
}

// TestTableBoundsRefused: max_disks and history_per_disk outside their
// bounds, from a flag or the config file, are refused with the bound.
func TestTableBoundsRefused(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "diskd.conf")
	if err := os.WriteFile(conf, []byte("max_disks = 20000000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string // "" for accepted
	}{
		{[]string{"--config", "/dev/null"}, ""},
		{[]string{"--config", "/dev/null", "--max-disks", "1", "--history-per-disk", "1024"}, ""},
		{[]string{"--config", "/dev/null", "--max-disks", "0"}, "max_disks 0: want 1 to 10000000"},
		{[]string{"--config", "/dev/null", "--max-disks", "-5"}, "max_disks -5: want 1 to 10000000"},
		{[]string{"--config", conf}, "max_disks 20000000: want 1 to 10000000"},
		{[]string{"--config", "/dev/null", "--history-per-disk", "0"}, "history_per_disk 0: want 1 to 1024"},
		{[]string{"--config", "/dev/null", "--history-per-disk", "1025"}, "history_per_disk 1025: want 1 to 1024"},
	} {
		c, err := parseArgs(tc.args)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v refused: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		case tc.want == "" && (c.MaxDisks < 1 || c.HistoryPerDisk < 1):
			t.Errorf("%v: %+v", tc.args, c.Config)
		}
	}
}

// TestFlagsOfThePackages: the peer network's and gossip's flags are
// registered here (the packages take plain structs); --announce-limit is
// hidden (benchmarks only).
func TestFlagsOfThePackages(t *testing.T) {
	fs := pflag.NewFlagSet("diskd", pflag.ContinueOnError)
	c := defaultConfig()
	addFlags(fs, &c)
	for _, f := range []string{"group", "port", "interface", "ttl", "key-file", "heartbeat-interval", "ipv4", "ipv6",
		"join", "gossip-port", "gossip-bind", "advertise", "gossip-profile", "gossip-insecure"} {
		if fs.Lookup(f) == nil {
			t.Errorf("no --%s", f)
		}
	}
	if f := fs.Lookup("announce-limit"); f == nil || !f.Hidden {
		t.Error("--announce-limit should exist, hidden")
	}
}
