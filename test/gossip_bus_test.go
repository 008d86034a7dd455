package test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/testutil"
)

// TestGossipOnTheBus: b1 gossips with a1 across the router (multicast
// routing off) and serves a private system bus; a2 speaks only multicast
// on a1's subnet. On b1's bus, busctl reads how each machine is reached
// (Machine.Reach: a1 "gossip", a2 "gossip via dkw-a1", b1 itself empty)
// and the gossip health in GetStatus; diskctl --bus says the same as the
// socket; a2, relayed, carries its routable address to subnet B.
func TestGossipOnTheBus(t *testing.T) {
	bus := startPolicyBus(t)
	nw := testutil.Routed(t, 2, 1)
	a1, a2, b1 := nw.Subnets[0][0], nw.Subnets[0][1], nw.Subnets[1][0]
	key := writeKeyFile(t, gossipKey)

	da1 := startOn(t, a1, nil, gossipArgs(key, b1.Addr4.String())...)
	da2 := startOn(t, a2, nil, "--key-file", key)
	db1 := startOn(t, b1, nil, gossipArgs(key, a1.Addr4.String(), "--dbus", bus.Address)...)
	waitBusName(t, bus)

	testutil.Eventually(t, gossipWait, "a2 on b1 through a1, with its address", func() bool {
		p, ok := peerNamed(t, db1, "dkw-a2")
		return ok && p.Online && p.Reach == "gossip via dkw-a1" && slices.Contains(p.Addresses, a2.Addr4.String())
	})
	// Not link-local: those mean nothing on another subnet.
	if p, _ := peerNamed(t, db1, "dkw-a2"); slices.ContainsFunc(p.Addresses, func(a string) bool { return strings.HasPrefix(a, "fe80:") }) {
		t.Errorf("a2's addresses on b1 include a link-local one: %v", p.Addresses)
	}
	if out := db1.MustCtl("peers"); !strings.Contains(out, a2.Addr4.String()) {
		t.Errorf("peers on b1 does not list a2's address %s:\n%s", a2.Addr4, out)
	}

	for _, c := range []struct {
		d    *testutil.Daemon
		want string
	}{{da1, `s "gossip"`}, {da2, `s "gossip via dkw-a1"`}, {db1, `s ""`}} {
		var h api.Localhost
		if err := json.Unmarshal([]byte(c.d.MustCtl("localhost", "--json")), &h); err != nil {
			t.Fatal(err)
		}
		path := string(dbus.MachinePath(h.NodeID))
		testutil.Eventually(t, gossipWait, h.Name+"'s Reach on the bus", func() bool {
			out, err := busctlErr(bus, "get-property", dbus.BusName, path, dbus.MachineInterface, "Reach")
			return err == nil && strings.TrimSpace(out) == c.want
		})
	}

	var reply struct {
		Data []string `json:"data"`
	}
	out := busctl(t, bus, "--json=short", "call", dbus.BusName, dbus.ManagerPath, dbus.ManagerInterface, "GetStatus", "a{sv}", "0")
	if err := json.Unmarshal([]byte(out), &reply); err != nil || len(reply.Data) != 1 {
		t.Fatalf("GetStatus reply %q: %v", out, err)
	}
	var st api.Status
	if err := json.Unmarshal([]byte(reply.Data[0]), &st); err != nil {
		t.Fatal(err)
	}
	if g := st.Gossip; g == nil || g.Members != 2 || !g.Keyed || !g.Joined || g.Suspect != 0 || g.UDPBlocked {
		t.Errorf("GetStatus's gossip on the bus: %+v; want 2 members, keyed, joined, none suspect, UDP not blocked", g)
	}

	// diskctl --bus reads the same reach as the socket.
	var viaBus, viaSock []struct {
		Name  string `json:"name"`
		Reach string `json:"reach"`
	}
	if err := json.Unmarshal([]byte(db1.MustCtl("--bus", "--bus-address", bus.Address, "peers", "--json")), &viaBus); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(db1.MustCtl("peers", "--json")), &viaSock); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(viaBus, viaSock) {
		t.Errorf("peers --json: over the bus %+v, over the socket %+v", viaBus, viaSock)
	}
}
