package test

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/gossip"
	"github.com/diskd/diskd/pkg/testutil"
)

// Gossip between subnets (issue 12, part 2): testutil.Routed with
// multicast routing off, so only the gossip path crosses the router.

const (
	gossipKey = "1 0123456789abcdef0123456789abcdef\n"
	// gossipWait bounds what the LAN profile takes to notice a killed
	// member: suspicion (about 5 s at this size) plus a probe round or
	// two, plus our 1 s tick.
	gossipWait = 30 * time.Second
)

// gossipArgs are a gossip node's flags: join the other, keyed.
func gossipArgs(key, join string, more ...string) []string {
	a := []string{"--join", join}
	if key != "" {
		a = append(a, "--key-file", key)
	}
	return append(a, more...)
}

func gossipStatus(t *testing.T, d *testutil.Daemon) *api.GossipStatus {
	t.Helper()
	var st api.Status
	if err := json.Unmarshal([]byte(d.MustCtl("status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	return st.Gossip
}

// TestGossipRelay: a1 and b1 gossip across the router; a2 and b2 speak
// only multicast, on subnets A and B. b1 and b2 list a2 with its own
// hostname (relayed into gossip by a1, onto B's link by b1), a disk
// attached on a2 shows on both, a2 lists b2 the same way, and a2 goes
// offline on B when a1, its only relay, is killed.
func TestGossipRelay(t *testing.T) {
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid")
	nw := testutil.Routed(t, 2, 2)
	a1, a2, b1, b2 := nw.Subnets[0][0], nw.Subnets[0][1], nw.Subnets[1][0], nw.Subnets[1][1]
	key := writeKeyFile(t, gossipKey)
	dev := newLoopDev(t)
	img := testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "GOSSIP_A2")

	da1 := startOn(t, a1, nil, gossipArgs(key, b1.Addr4.String())...)
	da2 := startOn(t, a2, []string{dev}, "--key-file", key)
	db1 := startOn(t, b1, nil, gossipArgs(key, a1.Addr4.String())...)
	db2 := startOn(t, b2, nil, "--key-file", key)

	testutil.Eventually(t, gossipWait, "a1 and b1 gossip", func() bool {
		g := gossipStatus(t, db1)
		return g != nil && g.Members == 2
	})
	testutil.Eventually(t, gossipWait, "a1 on b1 by gossip", func() bool {
		p, ok := peerNamed(t, db1, "dkw-a1")
		return ok && p.Online && p.Reach == "gossip"
	})
	testutil.Eventually(t, gossipWait, "a2 on b1 through a1", func() bool {
		p, ok := peerNamed(t, db1, "dkw-a2")
		return ok && p.Online && p.Reach == "gossip via dkw-a1"
	})
	var seen disk.Node
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("a2 as b2 last saw it: %+v", seen)
		}
	})
	// Relayed twice (into gossip by a1, onto B's link by b1), a2 still
	// carries its routable address.
	testutil.Eventually(t, gossipWait, "a2 on b2 through b1, with its address", func() bool {
		p, ok := peerNamed(t, db2, "dkw-a2")
		seen = p
		return ok && p.Online && p.Reach == "multicast via dkw-b1" && slices.Contains(p.Addresses, a2.Addr4.String())
	})
	testutil.Eventually(t, gossipWait, "b2 on a2 through a1, with its address", func() bool {
		p, ok := peerNamed(t, da2, "dkw-b2")
		return ok && p.Online && p.Reach == "multicast via dkw-a1" && slices.Contains(p.Addresses, b2.Addr4.String())
	})
	losetup(t, dev, img)
	for _, d := range []*testutil.Daemon{db1, db2} {
		testutil.Eventually(t, gossipWait, "GOSSIP_A2 listed on subnet B", func() bool {
			g := find(listJSON(t, d), "GOSSIP_A2")
			return g != nil && g.Present && g.Host == "dkw-a2" && g.Device == dev
		})
	}
	// No loop: b2 is not relayed back to B, nor a2 back to A.
	for _, c := range []struct {
		d    *testutil.Daemon
		name string
	}{{da1, "dkw-a2"}, {db1, "dkw-b2"}} {
		if p, _ := peerNamed(t, c.d, c.name); p.Reach != "multicast" {
			t.Errorf("%s's reach: %q, want multicast alone", c.name, p.Reach)
		}
	}
	if !strings.Contains(db1.MustCtl("peers"), "gossip via dkw-a1") {
		t.Errorf("peers on b1 does not say how a2 is reached:\n%s", db1.MustCtl("peers"))
	}
	// Killed relay: a2 (and a1) go offline on b1 through failure detection.
	if err := sigkill(da1); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, gossipWait, "a2 offline on subnet B", func() bool {
		return !onlineOn(t, db1, "dkw-a2") && !onlineOn(t, db1, "dkw-a1") && !onlineOn(t, db2, "dkw-a2")
	})
	if c := gossipStatus(t, db1).Counters; c["members_failed"] != 1 {
		t.Errorf("b1's members_failed=%d, want 1 (a1 was killed)", c["members_failed"])
	}
	if g := find(listJSON(t, db1), "GOSSIP_A2"); g == nil || g.Present {
		t.Errorf("GOSSIP_A2 on b1 after its relay died: %+v, want remembered, not present", g)
	}
}

// TestGossipCleanStop: a member that stops cleanly (Leave) is offline on
// the other subnet at once, not after failure detection.
func TestGossipCleanStop(t *testing.T) {
	nw := testutil.Routed(t, 1, 1)
	a1, b1 := nw.Subnets[0][0], nw.Subnets[1][0]
	key := writeKeyFile(t, gossipKey)
	da1 := startOn(t, a1, nil, gossipArgs(key, b1.Addr4.String())...)
	db1 := startOn(t, b1, nil, gossipArgs(key, a1.Addr4.String())...)
	testutil.Eventually(t, gossipWait, "a1 on b1", func() bool { return onlineOn(t, db1, "dkw-a1") })
	if err := da1.Stop(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, gossipWait, "a1 offline on b1", func() bool { return !onlineOn(t, db1, "dkw-a1") })
	// Offline because it left, not because failure detection found it
	// dead: the figure for "how soon" is BenchmarkGossipStop.
	c := gossipStatus(t, db1).Counters
	if c["members_left"] != 1 || c["members_failed"] != 0 {
		t.Errorf("b1's counters: members_left=%d members_failed=%d, want 1 and 0", c["members_left"], c["members_failed"])
	}
}

// TestGossipKeys: members keyed differently never gossip: no member, no
// node, no disk crosses, and each side counts the other's packets as
// undecryptable; an unkeyed member (--gossip-insecure) is refused the same
// way; --join without a key is refused at start.
func TestGossipKeys(t *testing.T) {
	nw := testutil.Routed(t, 1, 2)
	a1, b1, b2 := nw.Subnets[0][0], nw.Subnets[1][0], nw.Subnets[1][1]
	key := writeKeyFile(t, gossipKey)
	other := writeKeyFile(t, "1 fedcba9876543210fedcba9876543210\n")
	da1 := startOn(t, a1, nil, gossipArgs(key, b1.Addr4.String())...)
	db1 := startOn(t, b1, nil, gossipArgs(other, a1.Addr4.String())...)
	db2 := startOn(t, b2, nil, gossipArgs("", a1.Addr4.String(), "--gossip-insecure")...)
	testutil.Eventually(t, gossipWait, "a1 refusing both", func() bool {
		return gossipStatus(t, da1).Counters["drop_decrypt"] >= 2 && gossipStatus(t, db1).Counters["drop_decrypt"] >= 1
	})
	// Three join attempts each, all refused.
	testutil.Eventually(t, gossipWait, "three failed joins each", func() bool {
		return gossipStatus(t, db1).Counters["joins_failed"] >= 3 && gossipStatus(t, db2).Counters["joins_failed"] >= 3
	})
	for _, d := range []*testutil.Daemon{da1, db1, db2} {
		if g := gossipStatus(t, d); g.Members != 1 {
			t.Errorf("a daemon has %d gossip members, want 1 (alone)", g.Members)
		}
	}
	if _, ok := peerNamed(t, da1, "dkw-b1"); ok {
		t.Error("a1 knows b1 (other key)")
	}
	if _, ok := peerNamed(t, da1, "dkw-b2"); ok {
		t.Error("a1 knows b2 (no key)")
	}
	if _, ok := peerNamed(t, db1, "dkw-a1"); ok {
		t.Error("b1 knows a1 (other key)")
	}
	st := status(t, db2)
	if st.Gossip == nil || st.Gossip.Keyed || !slices.ContainsFunc(st.Problems, func(p string) bool { return strings.Contains(p, "UNAUTHENTICATED") }) {
		t.Errorf("status of the unkeyed member does not say it is unauthenticated: %+v", st.Problems)
	}

	// --join without --key-file or --gossip-insecure: refused, with the way out.
	diskd, _ := testutil.Binaries(t)
	dir := t.TempDir()
	out, err := exec.Command("unshare", "--net", "--", diskd, "--config", "/dev/null", "--state-dir", dir,
		"--socket", filepath.Join(dir, "s"), "--dbus", "off", "--join", "10.0.0.1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--gossip-insecure") {
		t.Errorf("diskd --join without a key: err %v, output %s; want a refusal naming --gossip-insecure", err, out)
	}
}

// TestGossipStrangers: a bare UDP flood and a memberlist agent that is not
// diskd (no label, no key: a stray Serf/Consul) on the gossip port are
// dropped and counted; the agent never becomes a member.
func TestGossipStrangers(t *testing.T) {
	nw := testutil.Routed(t, 1, 1)
	a1, b1 := nw.Subnets[0][0], nw.Subnets[1][0]
	key := writeKeyFile(t, gossipKey)
	da1 := startOn(t, a1, nil, gossipArgs(key, b1.Addr4.String())...)
	target := netip.AddrPortFrom(a1.Addr4, gossip.DefaultPort)
	// The gossip port opens after the first scan: wait for it.
	testutil.Eventually(t, gossipWait, "a1's gossip port open", func() bool { return gossipStatus(t, da1).Advertise != "" })

	const flood = 2000
	err := b1.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(target))
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 512)
		for i := range flood {
			_, _ = rand.Read(buf)
			buf[0] = byte(i) // mostly not memberlist's label byte
			if _, err := c.Write(buf[:64+i%448]); err != nil {
				return err
			}
			if i%200 == 0 {
				time.Sleep(5 * time.Millisecond) // let the receiver keep up: counted, not lost in the socket buffer
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, gossipWait, "the flood counted", func() bool {
		c := gossipStatus(t, da1).Counters
		return c["drop_label"]+c["drop_malformed"]+c["drop_decrypt"] >= flood/2
	})

	// A stray memberlist agent: default config, no label, no key.
	before := gossipStatus(t, da1).Counters["drop_label"]
	var ml *memberlist.Memberlist
	err = b1.Do(func() error {
		conf := memberlist.DefaultLANConfig()
		conf.Name, conf.BindAddr, conf.BindPort = "stray-serf", b1.Addr4.String(), 7946
		conf.LogOutput = io.Discard
		m, err := memberlist.Create(conf)
		if err != nil {
			return err
		}
		ml = m
		_, jerr := m.Join([]string{target.String()})
		if jerr == nil {
			return errors.New("the stray agent joined diskd's gossip")
		}
		return nil
	})
	if ml != nil {
		t.Cleanup(func() { _ = ml.Shutdown() })
	}
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, gossipWait, "the stray agent's stream counted", func() bool {
		return gossipStatus(t, da1).Counters["drop_label"] > before
	})
	if g := gossipStatus(t, da1); g.Members != 1 {
		t.Errorf("a1 has %d members, want 1", g.Members)
	}
}

// TestGossipUDPBlocked: with UDP to the gossip port blocked and TCP open
// (a firewall that lets only TCP through), members stay up on memberlist's
// TCP fallback and status says what is wrong.
func TestGossipUDPBlocked(t *testing.T) {
	nw := testutil.Routed(t, 1, 1)
	a1, b1 := nw.Subnets[0][0], nw.Subnets[1][0]
	key := writeKeyFile(t, gossipKey)
	da1 := startOn(t, a1, nil, gossipArgs(key, b1.Addr4.String())...)
	startOn(t, b1, nil, gossipArgs(key, a1.Addr4.String())...)
	testutil.Eventually(t, gossipWait, "a1 and b1 gossip", func() bool { return gossipStatus(t, da1).Members == 2 })
	// b1 can no longer send UDP to the gossip port (a policy rule; no
	// firewall tools needed): a1's UDP probes go unanswered, TCP works.
	if out, err := b1.Command("ip", "rule", "add", "ipproto", "udp", "dport", strconv.Itoa(gossip.DefaultPort), "prohibit").CombinedOutput(); err != nil {
		t.Skipf("ip rule ipproto: %v %s", err, out)
	}
	testutil.Eventually(t, gossipWait, "a1 says UDP is blocked", func() bool {
		st := status(t, da1)
		return st.Gossip.UDPBlocked && slices.ContainsFunc(st.Problems, func(p string) bool { return strings.Contains(p, "UDP probes fail while TCP works") })
	})
	if g := gossipStatus(t, da1); g.Members != 2 {
		t.Errorf("a1 has %d members with UDP blocked, want 2 (TCP fallback)", g.Members)
	}
}
