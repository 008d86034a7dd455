package test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/legacy"
	"github.com/diskd/diskd/pkg/testutil"
)

// The legacy bridge (issue 13) against the real original Perl diskd on
// namespace hosts: diskd --legacy with real loop disks on one host, the
// original with fake blkid output on another, a stranger on a third.

const legacyWait = 20 * time.Second // the original announces 5 s after its start

// perlDisks is the original peer's blkid output: labels with spaces,
// quotes, raw UTF-8 (which it sends encoded twice) and blkid's own M-
// notation (what a real blkid prints), and a disk without a label.
const perlDisks = `/dev/sdz1: LABEL="LEGACY_B" UUID="1111aaaa-0000-4000-8000-00000000000a" TYPE="ext4"
/dev/sdy1: LABEL="My Backup Disk" UUID="2222-BBBB" TYPE="vfat"
/dev/sdx1: LABEL="Données été" UUID="3333-CCCC" TYPE="exfat"
/dev/sdw1: LABEL="CafM-CM-) M-eM-^FM-^YM-gM-^\M-^_" UUID="4444-DDDD" TYPE="ext4"
/dev/sdv1: LABEL="it's #1: ok" UUID="5555-EEEE" TYPE="vfat"
/dev/sdu1: UUID="6666-FFFF" TYPE="vfat"
/dev/loop0: TYPE="squashfs"
`

// perlWant is what diskd must list for perlDisks.
var perlWant = []legacy.Entry{
	{UUID: "1111aaaa-0000-4000-8000-00000000000a", Label: "LEGACY_B", Device: "/dev/sdz1"},
	{UUID: "2222-BBBB", Label: "My Backup Disk", Device: "/dev/sdy1"},
	{UUID: "3333-CCCC", Label: "Données été", Device: "/dev/sdx1"},
	{UUID: "4444-DDDD", Label: "Café 写真", Device: "/dev/sdw1"},
	{UUID: "5555-EEEE", Label: "it's #1: ok", Device: "/dev/sdv1"},
	{UUID: "6666-FFFF", Label: "", Device: "/dev/sdu1"},
}

// legacyListed reports whether d lists exactly want, present, on host.
func legacyListed(t *testing.T, d *testutil.Daemon, host string, want []legacy.Entry) bool {
	var got []legacy.Entry
	for _, x := range disksOn(t, d, host) {
		if x.Present {
			got = append(got, legacy.Entry{UUID: x.UUID, Label: x.Label, Device: x.Device})
		}
	}
	key := func(a, b legacy.Entry) int { return strings.Compare(a.Device, b.Device) }
	w := slices.Clone(want)
	slices.SortFunc(got, key)
	slices.SortFunc(w, key)
	return slices.Equal(got, w)
}

func TestLegacyBridgeWithTheOriginal(t *testing.T) {
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid")
	requirePerlDiskd(t)
	hosts := testutil.Hosts(t, 3)
	// Our disks: labels with non-ASCII, spaces and both quotes, and one
	// with a byte that is not UTF-8 (the original shows it as the Latin-1
	// character it would make of it itself).
	labels := []string{"Données été", `it's "q" #1`, "caf\xe9"}
	var devs, uuids []string
	for _, l := range labels {
		dev := newLoopDev(t)
		img := testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", l)
		losetup(t, dev, img)
		devs = append(devs, dev)
		uuids = append(uuids, blkidUUID(t, img))
	}
	watch := legacyWatch(t, hosts[2])
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range watch() {
				t.Logf("on the legacy group from %v, TTL %d: %q", h.src, h.ttl, h.b)
			}
		}
	})
	// diskd first, so it hears the original's first announce (5 s after
	// its start); the original hears what is sent after its start: diskd
	// sends every minute, and at once on `diskctl announce`.
	d := startOn(t, hosts[0], devs, "--legacy")
	perl := startPerlPeer(t, hosts[1], perlDisks)
	d.MustCtl("announce")
	perlHost := hosts[1].Addr4.String()

	t.Run("diskd lists the original's disks", func(t *testing.T) {
		testutil.Eventually(t, legacyWait, "the original peer's disks listed", func() bool {
			return legacyListed(t, d, perlHost, perlWant)
		})
		if out := d.MustCtl("where", "LEGACY_B"); !strings.Contains(out, "LEGACY_B is on "+perlHost+" as /dev/sdz1") {
			t.Errorf("where LEGACY_B = %q", out)
		}
		if out := d.MustCtl("where", "Café 写真"); !strings.Contains(out, "is on "+perlHost) {
			t.Errorf("where by a decoded label = %q", out)
		}
		n, ok := peerNamed(t, d, perlHost)
		if !ok || !n.Reach.Legacy() || !n.Online || n.Disks != len(perlWant) || n.ID != "legacy0a630002" ||
			!slices.Equal(n.Addresses, []string{perlHost}) {
			t.Errorf("legacy peer: %+v (%v)", n, ok)
		}
		if out := d.MustCtl("peers"); !strings.Contains(out, "online (legacy)") {
			t.Errorf("peers does not show the legacy peer as legacy:\n%s", out)
		}
	})

	t.Run("the original lists diskd's disks", func(t *testing.T) {
		want := []string{
			perlLine(hosts[0].Addr4.String(), uuids[0], labels[0], devs[0]),
			perlLine(hosts[0].Addr4.String(), uuids[1], labels[1], devs[1]),
			perlLine(hosts[0].Addr4.String(), uuids[2], "café", devs[2]),
		}
		var lines []string
		asked := time.Now()
		testutil.Eventually(t, legacyWait, "diskd's disks in the original's list", func() bool {
			if time.Since(asked) > 3*time.Second { // a datagram lost: ask again
				d.MustCtl("announce")
				asked = time.Now()
			}
			var err error
			lines, err = perl.list()
			return err == nil && !slices.ContainsFunc(want, func(w string) bool { return !slices.Contains(lines, w) })
		})
		for _, l := range lines {
			if strings.HasPrefix(l, hosts[0].Addr4.String()+":") && !slices.Contains(want, l) {
				t.Errorf("the original lists more of diskd's: %q", l)
			}
		}
	})

	t.Run("sent as the original sends", func(t *testing.T) {
		// From port 32003 with TTL 2, in the original's format: the same
		// bytes the encoder (golden files from YAML::XS) makes.
		var ours []legacy.Entry
		for i := range labels {
			ours = append(ours, legacy.Entry{UUID: uuids[i], Label: labels[i], Device: devs[i]})
		}
		slices.SortFunc(ours, func(a, b legacy.Entry) int { return strings.Compare(a.Device, b.Device) })
		want, _ := legacy.Encode(ours)
		n := 0
		for _, h := range watch() {
			if h.src.Addr() != hosts[0].Addr4 {
				continue
			}
			n++
			if h.src.Port() != legacy.DefaultPort || h.ttl != legacy.TTL || !bytes.Equal(h.b, want) {
				t.Errorf("from %v TTL %d: %q\nwant from port %d, TTL %d: %q", h.src, h.ttl, h.b, legacy.DefaultPort, legacy.TTL, want)
			}
		}
		if n == 0 {
			t.Error("nothing seen from diskd on the legacy group")
		}
	})

	t.Run("status says unauthenticated", func(t *testing.T) {
		s := status(t, d)
		if s.Legacy == nil || s.Legacy.Group != "230.1.2.3:32003" || s.Legacy.PeersOnline != 1 ||
			!slices.Equal(s.Legacy.Interfaces, []string{"eth0"}) || s.Legacy.Counters["sent_datagrams"] == 0 ||
			s.Legacy.Counters["lists_applied"] == 0 {
			t.Errorf("legacy status: %+v", s.Legacy)
		}
		if out := d.MustCtl("status"); !strings.Contains(out, "legacy bridge: UNAUTHENTICATED") {
			t.Errorf("status text:\n%s", out)
		}
		if !strings.Contains(d.Log(), "legacy network is unauthenticated") {
			t.Error("the log does not say the legacy network is unauthenticated")
		}
	})

	t.Run("malformed datagrams", func(t *testing.T) {
		tap := testutil.NewTap(t, hosts[2], legacyGroup)
		bad := malformedLegacy()
		sum := func() uint64 { // the parser's refusals (not our own looped-back announces)
			var n uint64
			c := status(t, d).Legacy.Counters
			for _, r := range []string{"too_big", "no_prefix", "encoding", "syntax", "shape", "limits"} {
				n += c["drop_"+r]
			}
			return n
		}
		base := sum()
		// In batches, each counted before the next, so none is lost to a
		// full socket buffer and every one is known to have been refused.
		for i := 0; i < len(bad); i += 25 {
			batch := bad[i:min(i+25, len(bad))]
			tap.Send(netip.Addr{}, batch...)
			testutil.Eventually(t, peerWait, "the batch refused", func() bool { return sum() >= base+uint64(i+len(batch)) })
		}
		if got := sum() - base; got != uint64(len(bad)) {
			t.Errorf("%d of %d malformed datagrams counted as dropped", got, len(bad))
		}
		t.Logf("%d malformed datagrams refused; counters %v", len(bad), status(t, d).Legacy.Counters)
		if !legacyListed(t, d, perlHost, perlWant) {
			t.Error("the original peer's disks changed")
		}
		// The original dies on such datagrams (its hazard, not ours);
		// restarted with another disk, diskd hears its new list.
		t.Logf("the original survived the flood: %v", perl.alive())
		perl.stop()
		perl = startPerlPeer(t, hosts[1], perlDisks+`/dev/sdt1: LABEL="SURVIVOR" UUID="7777-AAAA" TYPE="ext4"`+"\n")
		want := append(slices.Clone(perlWant), legacy.Entry{UUID: "7777-AAAA", Label: "SURVIVOR", Device: "/dev/sdt1"})
		testutil.Eventually(t, legacyWait, "the restarted original's new list", func() bool {
			return legacyListed(t, d, perlHost, want)
		})
	})
}

// malformedLegacy is some hundreds of datagrams the bridge must refuse:
// invalid YAML, alias bombs, deep nesting, wrong shapes, oversized,
// binary, no prefix.
func malformedLegacy() [][]byte {
	rng := rand.New(rand.NewPCG(13, 13))
	p := func(s string) []byte { return []byte(legacy.Prefix + s) }
	bomb := "---\na: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n"
	for i, prev := 'b', 'a'; i <= 'i'; i, prev = i+1, i {
		bomb += fmt.Sprintf("%c: &%c [*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c]\n", i, i, prev, prev, prev, prev, prev, prev, prev, prev, prev)
	}
	// Each %d takes the datagram's number, so no two are alike.
	formats := []string{
		"[unclosed %d",          // invalid YAML: kills the original
		"--- [%d, 2]\n",         // a flow list of numbers: kills the original's list
		"---\n- - a%d\n  - b\n", // two fields
		"---\n- scalar%d\n",     // an entry that is not a list
		"---\n- - !!perl/hash:Foo %d\n  - b\n  - c\n",
		"---\n- - &x a%d\n  - *x\n  - c\n",
		"---\n- - a%d\n  - \xc3\x28\n  - c\n", // not UTF-8
		"---\n- - a: %d\n  - b\n  - c\n",
	}
	var out [][]byte
	for i := range 300 {
		switch k := i % 15; {
		case k < len(formats):
			out = append(out, p(fmt.Sprintf(formats[k], i)))
		case k == 8:
			out = append(out, p(bomb))
		case k == 9:
			n := 100 + i
			out = append(out, p("--- "+strings.Repeat("[", n)+strings.Repeat("]", n)+"\n"))
		case k == 10:
			var b strings.Builder
			b.WriteString("---\n")
			for k := range 20 + i%10 {
				b.WriteString(strings.Repeat("  ", k) + "- - x\n")
			}
			out = append(out, p(b.String()))
		case k == 11:
			out = append(out, p("--- {}\n"))
		case k == 12:
			out = append(out, p("---\n- - a\n  - "+strings.Repeat("x", 1500+i*20)+"\n  - c\n"))
		case k == 13:
			b := make([]byte, 50+rng.IntN(1400))
			for k := range b {
				b[k] = byte(rng.UintN(256))
			}
			out = append(out, append([]byte(legacy.Prefix), b...))
		default:
			out = append(out, []byte(fmt.Sprintf("hello world %d", i)))
		}
	}
	return out
}

// TestLegacyOffByDefault: without --legacy, diskd has no socket on the
// old port, no membership of the old group, sends nothing to it and
// takes nothing from it.
func TestLegacyOffByDefault(t *testing.T) {
	hosts := testutil.Hosts(t, 2)
	tap := testutil.NewTap(t, hosts[1], legacyGroup)
	peerTap := newWireTap(t, hosts[1])
	d := startOn(t, hosts[0], nil)
	testutil.Eventually(t, peerWait, "diskd on its own network", func() bool { return len(peerTap.Datagrams()) > 0 })

	read := func(f string) string {
		out, err := hosts[0].Command("cat", f).Output()
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	if igmp := read("/proc/net/igmp"); strings.Contains(igmp, "030201E6") {
		t.Errorf("member of 230.1.2.3:\n%s", igmp)
	}
	if udp := read("/proc/net/udp"); strings.Contains(udp, fmt.Sprintf(":%04X ", legacy.DefaultPort)) {
		t.Errorf("a socket on port %d:\n%s", legacy.DefaultPort, udp)
	}
	dg := []byte("diskd:---\n- - 1111-AAAA\n  - NOT_BRIDGED\n  - /dev/sdq1\n")
	tap.Send(netip.Addr{}, dg)
	// Three more heartbeats from diskd: time enough to have taken it.
	n := len(peerTap.Datagrams())
	testutil.Eventually(t, peerWait, "three heartbeats", func() bool { return len(peerTap.Datagrams()) >= n+3 })
	if w, _, _ := d.Ctl("where", "NOT_BRIDGED"); !strings.Contains(w, "not known") {
		t.Errorf("a legacy datagram taken without --legacy: %q", w)
	}
	for _, b := range tap.Datagrams() {
		if !bytes.Equal(b, dg) {
			t.Errorf("sent to the legacy group without --legacy: %q", b)
		}
	}
	if s := status(t, d); s.Legacy != nil {
		t.Errorf("status has a legacy section: %+v", s.Legacy)
	}
	for _, n := range peersOf(t, d) {
		if n.Reach.Legacy() {
			t.Errorf("a legacy node: %+v", n)
		}
	}
}

// TestLegacyNeverTouchesKeyedPeers: a legacy datagram sent from a keyed
// diskd peer's own address, claiming other disks for it, changes nothing
// of what that peer reported; one from a host without diskd becomes a
// legacy peer of its own.
func TestLegacyNeverTouchesKeyedPeers(t *testing.T) {
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid")
	hosts := testutil.Hosts(t, 3)
	key := writeKeyFile(t, "1 0123456789abcdef0123456789abcdef\n")
	dev := newLoopDev(t)
	losetup(t, dev, testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "KEYED_DISK"))
	d := startOn(t, hosts[0], nil, "--legacy", "--key-file", key)
	startOn(t, hosts[1], []string{dev}, "--key-file", key)
	testutil.Eventually(t, peerWait, "the keyed peer's disk", func() bool {
		g := find(listJSON(t, d), "KEYED_DISK")
		return g != nil && g.Present && g.Host == "dkd-h2"
	})
	forged := []byte("diskd:---\n- - 1111-AAAA\n  - FORGED\n  - " + dev + "\n")
	testutil.NewTap(t, hosts[1], legacyGroup).Send(netip.Addr{}, forged)
	testutil.NewTap(t, hosts[2], legacyGroup).Send(netip.Addr{}, forged)
	testutil.Eventually(t, peerWait, "the stranger's list as a legacy peer", func() bool {
		n, ok := peerNamed(t, d, hosts[2].Addr4.String())
		return ok && n.Reach.Legacy() && n.Disks == 1
	})
	testutil.Eventually(t, peerWait, "the forged datagram from the keyed peer's address refused", func() bool {
		return status(t, d).Legacy.Counters["drop_diskd_peer"] >= 1
	})
	for _, x := range listJSON(t, d) {
		if x.Host == "dkd-h2" && (x.Label != "KEYED_DISK" || !x.Present) {
			t.Errorf("the keyed peer's records changed: %+v", x)
		}
	}
	if w := d.MustCtl("where", "FORGED"); strings.Contains(w, "dkd-h2") || !strings.Contains(w, hosts[2].Addr4.String()) {
		t.Errorf("where FORGED = %q", w)
	}
}
