package main

import (
	"encoding"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// configKey is one key of the config file: its dotted name ("ttl" inside
// [network] is "network.ttl") and where it lives in Config.
type configKey struct {
	name  string
	index []int
}

// configKeys lists every key of the config file by reflection over t, so a
// field added to Config (or to NetworkConfig, GossipConfig) is a key the
// precedence table must cover.
func configKeys(t reflect.Type, prefix string, index []int) []configKey {
	var keys []configKey
	textual := reflect.TypeFor[encoding.TextUnmarshaler]()
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("toml")
		idx := append(slices.Clone(index), i)
		switch {
		case tag == "-" || !f.IsExported():
		case f.Anonymous && tag == "":
			keys = append(keys, configKeys(f.Type, prefix, idx)...)
		case f.Type.Kind() == reflect.Struct && !reflect.PointerTo(f.Type).Implements(textual):
			keys = append(keys, configKeys(f.Type, prefix+tag+".", idx)...)
		default:
			keys = append(keys, configKey{prefix + tag, idx})
		}
	}
	return keys
}

// precedenceCase says, for one key, a value for the config file (TOML) and
// what it decodes to, and a flag setting another value (nil: the key has
// no flag). Both differ from the default and from each other, so each
// layer is seen to win over the one before.
type precedenceCase struct {
	file     string
	fileWant any
	flag     []string
	flagWant any
}

var precedence = map[string]precedenceCase{
	"node_name":             {`"filehost"`, "filehost", []string{"--node-name", "flaghost"}, "flaghost"},
	"state_dir":             {`"/f/state"`, "/f/state", []string{"--state-dir", "/g/state"}, "/g/state"},
	"socket":                {`"/f/s.sock"`, "/f/s.sock", []string{"--socket", "/g/s.sock"}, "/g/s.sock"},
	"devices":               {`["/dev/f*"]`, []string{"/dev/f*"}, []string{"--devices", "/dev/g*", "--devices", "/dev/h*"}, []string{"/dev/g*", "/dev/h*"}},
	"exclude":               {`["/dev/f*"]`, []string{"/dev/f*"}, []string{"--exclude", "/dev/g*"}, []string{"/dev/g*"}},
	"blkid":                 {`"/f/blkid"`, "/f/blkid", []string{"--blkid", "/g/blkid"}, "/g/blkid"},
	"blkid_timeout":         {`"3s"`, Duration{3 * time.Second}, []string{"--blkid-timeout", "4s"}, Duration{4 * time.Second}},
	"scan_interval":         {`"1m"`, Duration{time.Minute}, []string{"--scan-interval", "2m"}, Duration{2 * time.Minute}},
	"uevents":               {`false`, false, []string{"--uevents=true"}, true},
	"dbus":                  {`"session"`, "session", []string{"--dbus", "unix:path=/x"}, "unix:path=/x"},
	"log_level":             {`"debug"`, "debug", []string{"--log-level", "warn"}, "warn"},
	"session_idle_timeout":  {`"1m"`, Duration{time.Minute}, []string{"--session-idle-timeout", "2m"}, Duration{2 * time.Minute}},
	"session_write_timeout": {`"1s"`, Duration{time.Second}, []string{"--session-write-timeout", "2s"}, Duration{2 * time.Second}},
	"max_sessions_per_user": {`5`, 5, []string{"--max-sessions-per-user", "6"}, 6},
	"admin_group":           {`"fgroup"`, "fgroup", []string{"--admin-group", ""}, ""},
	"mount_dir":             {`"/f/media"`, "/f/media", []string{"--mount-dir", "/g/media"}, "/g/media"},
	"mount_allow":           {`["F*"]`, []string{"F*"}, []string{"--mount-allow", "G*"}, []string{"G*"}},
	"mount_allow_rw":        {`["F*"]`, []string{"F*"}, []string{"--mount-allow-rw", "G*"}, []string{"G*"}},
	"legacy":                {`true`, true, []string{"--legacy=false"}, false},
	"legacy_group":          {`"230.9.9.9"`, "230.9.9.9", []string{"--legacy-group", "230.8.8.8"}, "230.8.8.8"},
	"legacy_port":           {`4000`, 4000, []string{"--legacy-port", "4001"}, 4001},
	"legacy_interval":       {`"1m"`, Duration{time.Minute}, []string{"--legacy-interval", "2m"}, Duration{2 * time.Minute}},
	"max_disks":             {`100`, 100, []string{"--max-disks", "200"}, 200},
	"history_per_disk":      {`2`, 2, []string{"--history-per-disk", "3"}, 3},

	"network.groups":               {`["239.1.1.1"]`, []string{"239.1.1.1"}, []string{"--group", "239.2.2.2", "--group", "ff02::9"}, []string{"239.2.2.2", "ff02::9"}},
	"network.port":                 {`5000`, 5000, []string{"--port", "5001"}, 5001},
	"network.interfaces":           {`["f0"]`, []string{"f0"}, []string{"--interface", "g0"}, []string{"g0"}},
	"network.ttl":                  {`2`, 2, []string{"--ttl", "3"}, 3},
	"network.key_file":             {`"/f/key"`, "/f/key", []string{"--key-file", "/g/key"}, "/g/key"},
	"network.heartbeat_interval":   {`"3s"`, 3 * time.Second, []string{"--heartbeat-interval", "4s"}, 4 * time.Second},
	"network.ipv4":                 {`false`, false, []string{"--ipv4=true"}, true},
	"network.ipv6":                 {`false`, false, []string{"--ipv6=true"}, true},
	"network.announces_per_minute": {`3`, 3, []string{"--announce-limit", "4"}, 4},
	"network.max_peers":            {`10`, 10, nil, nil},
	"network.source_rate":          {`5.5`, 5.5, nil, nil},
	"network.source_burst":         {`7.0`, 7.0, nil, nil},

	"join":            {`["f:1"]`, []string{"f:1"}, []string{"--join", "g:2", "--join", "h"}, []string{"g:2", "h"}},
	"gossip_port":     {`4000`, 4000, []string{"--gossip-port", "4001"}, 4001},
	"gossip_bind":     {`"127.0.0.1"`, "127.0.0.1", []string{"--gossip-bind", "127.0.0.2"}, "127.0.0.2"},
	"advertise":       {`"10.0.0.1"`, "10.0.0.1", []string{"--advertise", "10.0.0.2:9"}, "10.0.0.2:9"},
	"gossip_profile":  {`"wan"`, "wan", []string{"--gossip-profile", "lan"}, "lan"},
	"gossip_insecure": {`true`, true, []string{"--gossip-insecure=false"}, false},
}

// TestPrecedence: for every key of the config file, the config file
// overrides the default and a flag overrides the file. A key without a
// line in the table above fails, so a new key gets its test.
func TestPrecedence(t *testing.T) {
	keys := configKeys(reflect.TypeFor[Config](), "", nil)
	if len(keys) < 40 {
		t.Fatalf("found only %d keys by reflection: %v", len(keys), keys)
	}
	seen := map[string]bool{}
	for _, k := range keys {
		seen[k.name] = true
		tc, ok := precedence[k.name]
		if !ok {
			t.Errorf("config key %q has no line in the precedence table", k.name)
			continue
		}
		t.Run(k.name, func(t *testing.T) {
			get := func(c cliConfig) any { return reflect.ValueOf(c.Config).FieldByIndex(k.index).Interface() }
			def := get(cliConfig{Config: defaultConfig()})
			// A key inside [network] is written in that table.
			line := k.name + " = " + tc.file + "\n"
			if table, key, ok := strings.Cut(k.name, "."); ok {
				line = "[" + table + "]\n" + key + " = " + tc.file + "\n"
			}
			conf := filepath.Join(t.TempDir(), "diskd.conf")
			if err := os.WriteFile(conf, []byte(line), 0o644); err != nil {
				t.Fatal(err)
			}
			check := func(args []string, want any) {
				t.Helper()
				c, err := parseArgs(args)
				if err != nil {
					t.Fatalf("%q: %v", args, err)
				}
				if got := get(c); !reflect.DeepEqual(got, want) {
					t.Errorf("%q: %s = %#v, want %#v", args, k.name, got, want)
				}
			}
			if reflect.DeepEqual(def, tc.fileWant) {
				t.Fatalf("the file's value %#v is the default: the test could not tell the file was read", def)
			}
			check([]string{"--config", "/dev/null"}, def)
			check([]string{"--config", conf}, tc.fileWant)
			if tc.flag == nil {
				return
			}
			if reflect.DeepEqual(tc.flagWant, tc.fileWant) {
				t.Fatalf("the flag's value is the file's: the test could not tell the flag won")
			}
			check(append([]string{"--config", "/dev/null"}, tc.flag...), tc.flagWant)
			check(append([]string{"--config", conf}, tc.flag...), tc.flagWant)
			// The flag wins wherever it stands on the command line.
			check(append(slices.Clone(tc.flag), "--config", conf), tc.flagWant)
		})
	}
	for name := range precedence {
		if !seen[name] {
			t.Errorf("the precedence table has %q, which is no config key", name)
		}
	}
}

// TestBadValues: what a wrong value says, from the file and from a flag.
func TestBadValues(t *testing.T) {
	dir := t.TempDir()
	file := func(body string) string {
		p := filepath.Join(dir, strings.NewReplacer(" ", "_", "\n", "_", "=", "", `"`, "", "[", "", "]", "").Replace(body)+".conf")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", file("nodename = \"x\"\n")}, `unknown option "nodename"`},
		{[]string{"--config", file("[network]\nkeyfile = \"x\"\n")}, `unknown option "network.keyfile"`},
		{[]string{"--config", file("port = 5000\n")}, `unknown option "port"`}, // port is in [network]
		{[]string{"--config", file("[network]\nport = \"x\"\n")}, "port"},
		{[]string{"--config", file("blkid_timeout = \"soon\"\n")}, `invalid duration "soon"`},
		{[]string{"--config", file("[network]\nheartbeat_interval = 10\n")}, `network.heartbeat_interval: write a duration as a string`},
		{[]string{"--config", file("blkid_timeout = 5\n")}, "blkid_timeout"},
		{[]string{"--config", file("[network]\nheartbeat_interval = \"5\"\n")}, `last key "network.heartbeat_interval"): invalid duration: "5"`},
		{[]string{"--config", file("uevents = \"yes\"\n")}, "uevents"},
		{[]string{"--config", file("node_name = \n")}, "config " + dir},
		{[]string{"--config", filepath.Join(dir, "absent.conf")}, "no such file"},
		{[]string{"--config", "/dev/null", "--blkid-timeout", "soon"}, `invalid argument "soon" for "--blkid-timeout"`},
		{[]string{"--config", "/dev/null", "--port", "x"}, `invalid argument "x" for "--port"`},
		{[]string{"--config", "/dev/null", "--ipv4=maybe"}, `invalid argument "maybe" for "--ipv4"`},
		{[]string{"--config", "/dev/null", "--no-such-flag"}, "unknown flag: --no-such-flag"},
		{[]string{"--config", "/dev/null", "list"}, `unexpected argument "list" (diskd takes only flags)`},
		{[]string{"--config", file("max_disks = 0\n")}, "max_disks 0: want 1 to 10000000"},
		{[]string{"--config", "/dev/null", "--max-sessions-per-user", "0"}, "max_sessions_per_user 0: want 1-960"},
	} {
		_, err := parseArgs(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want it to say %q", tc.args, err, tc.want)
		}
	}
}
