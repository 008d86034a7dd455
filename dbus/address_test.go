package dbus

import (
	"strings"
	"testing"
)

// TestAddress: which bus Config.Bus means, honouring bus activation.
func TestAddress(t *testing.T) {
	for _, tc := range []struct {
		bus       string
		env       map[string]string
		want, err string
	}{
		{"system", nil, "unix:path=/run/dbus/system_bus_socket", ""},
		{"system", map[string]string{"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/x"}, "unix:path=/x", ""},
		{"system", map[string]string{"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/x", "DBUS_STARTER_BUS_TYPE": "system", "DBUS_STARTER_ADDRESS": "unix:path=/activated"}, "unix:path=/activated", ""},
		{"system", map[string]string{"DBUS_STARTER_BUS_TYPE": "session", "DBUS_STARTER_ADDRESS": "unix:path=/s"}, "unix:path=/run/dbus/system_bus_socket", ""},
		{"session", map[string]string{"DBUS_SESSION_BUS_ADDRESS": "unix:path=/sess"}, "unix:path=/sess", ""},
		{"session", map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}, "unix:path=/run/user/1000/bus", ""},
		{"session", nil, "", "no session bus"},
		{"unix:path=/tmp/b", nil, "unix:path=/tmp/b", ""},
		{"sytem", nil, "", `bus "sytem": want system, session or an address`},
	} {
		for _, k := range []string{"DBUS_SYSTEM_BUS_ADDRESS", "DBUS_SESSION_BUS_ADDRESS", "DBUS_STARTER_BUS_TYPE", "DBUS_STARTER_ADDRESS", "XDG_RUNTIME_DIR"} {
			t.Setenv(k, tc.env[k])
		}
		got, err := BusAddress(tc.bus)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s %v: err %v, want %q", tc.bus, tc.env, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s %v: %q %v, want %q", tc.bus, tc.env, got, err, tc.want)
		}
	}
}
