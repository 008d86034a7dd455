package gossip

import (
	"strconv"
	"strings"
	"testing"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/wire"
)

// TestNewRefuses: every gossip input is checked at start, with a message
// that says what is wrong.
func TestNewRefuses(t *testing.T) {
	keys, err := wire.ParseKeys(strings.NewReader("1 0123456789abcdef0123456789abcdef\n"))
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(store.Options{Local: disk.Node{ID: id('c'), Name: "me"}})
	ok := DefaultConfig()
	ok.Join = []string{"10.0.0.1"}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		keys *wire.Keyring
		want string // "" = accepted
	}{
		{"defaults with a key", func(c *Config) {}, keys, ""},
		{"no join", func(c *Config) { c.Join = nil }, keys, "no --join"},
		{"no key", func(c *Config) {}, nil, "--gossip-insecure"},
		{"no key, insecure", func(c *Config) { c.Insecure = true }, nil, ""},
		{"port 0", func(c *Config) { c.Port = 0 }, keys, "out of range"},
		{"port 65536", func(c *Config) { c.Port = 65536 }, keys, "out of range"},
		{"join with a bad port", func(c *Config) { c.Join = []string{"host:99999"} }, keys, "port"},
		{"join host:port", func(c *Config) { c.Join = []string{"gw.example:32005", "[fd00::1]:7", "fd00::2"} }, keys, ""},
		{"empty join", func(c *Config) { c.Join = []string{""} }, keys, "empty"},
		{"profile", func(c *Config) { c.Profile = "galaxy" }, keys, "want lan or wan"},
		{"wan", func(c *Config) { c.Profile = "wan" }, keys, ""},
		{"bind not an IP", func(c *Config) { c.Bind = "eth0" }, keys, "not an IP"},
		{"advertise a name", func(c *Config) { c.Advertise = "gw.example" }, keys, "want an IP"},
		{"advertise ip:port", func(c *Config) { c.Advertise = "192.0.2.1:40000" }, keys, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			c.Join = append([]string(nil), ok.Join...)
			tc.edit(&c)
			_, err := New(c, Deps{Store: st, Keys: tc.keys})
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("err %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// TestSplitJoin: HOST alone gets the gossip port.
func TestSplitJoin(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1": "10.0.0.1:32005", "10.0.0.1:7": "10.0.0.1:7", "gw.example": "gw.example:32005",
		"gw.example:9": "gw.example:9", "fd00::1": "fd00::1:32005", "[fd00::1]:9": "fd00::1:9",
	} {
		h, p, err := splitJoin(in, DefaultPort)
		if got := h + ":" + itoa(p); err != nil || got != want {
			t.Errorf("%q: %s, %v; want %s", in, got, err, want)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
