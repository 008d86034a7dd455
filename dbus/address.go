package dbus

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// DefaultSystemBusAddress is where the system bus listens when the
// environment does not say otherwise.
const DefaultSystemBusAddress = "unix:path=/run/dbus/system_bus_socket"

// BusAddress resolves a bus choice ("system", "session" or an address
// such as unix:path=/run/dbus/system_bus_socket) to an address, as the
// daemon and diskctl both must. A process started by bus activation is
// told its bus in DBUS_STARTER_ADDRESS, which wins for the same bus type.
func BusAddress(bus string) (string, error) {
	starter := func(typ string) string {
		if os.Getenv("DBUS_STARTER_BUS_TYPE") == typ {
			return os.Getenv("DBUS_STARTER_ADDRESS")
		}
		return ""
	}
	switch bus {
	case "system":
		if a := starter("system"); a != "" {
			return a, nil
		}
		if a := os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"); a != "" {
			return a, nil
		}
		return DefaultSystemBusAddress, nil
	case "session":
		if a := starter("session"); a != "" {
			return a, nil
		}
		if a := os.Getenv("DBUS_SESSION_BUS_ADDRESS"); a != "" {
			return a, nil
		}
		if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
			return "unix:path=" + d + "/bus", nil
		}
		return "", errors.New("no session bus: DBUS_SESSION_BUS_ADDRESS and XDG_RUNTIME_DIR are unset")
	}
	if !strings.Contains(bus, ":") {
		return "", fmt.Errorf("bus %q: want system, session or an address like %s", bus, DefaultSystemBusAddress)
	}
	return bus, nil
}

// BusLabel names a bus choice for messages: "system bus", "session bus",
// or "bus ADDRESS".
func BusLabel(bus string) string {
	switch bus {
	case "system", "session":
		return bus + " bus"
	}
	return "bus " + bus
}
