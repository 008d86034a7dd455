package test

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/testutil"
	"github.com/diskd/diskd/pkg/wire"
)

// Hostile input through the real binaries (issue 10): a USB stick whose
// label forges records, a peer whose name and mountpoints carry terminal
// escape sequences, and a stranger's crafted datagrams.

// hostileLabel is the USB stick of issue 10 and more: with raw blkid values
// it would forge two devices, and it holds terminal escapes, C1 CSI, DEL
// and a byte that is not UTF-8.
const hostileLabel = "inj\nDEVNAME=/dev/loop200\nLABEL=ROOT\nUUID=forged\n\nDEVNAME=/dev/loop201\nTYPE=ext4\n" +
	"\x1b[2J\u009b31m FILM-2024 \xff\x7f END"

const (
	hostileUUID = "77777777-7777-4777-8777-777777777777"
	dataUUID    = "99999999-9999-4999-8999-999999999999"
)

// checkTerminalSafe fails the test if out holds anything a terminal would
// act on: a control character but newline, a C1 control, a format
// character such as a bidi override, invalid UTF-8.
func checkTerminalSafe(t *testing.T, what, out string) {
	t.Helper()
	for _, r := range out {
		if r != '\n' && (r < 0x20 || r >= 0x7f && r <= 0x9f || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Cf, r)) {
			t.Errorf("%s prints U+%04X raw:\n%q", what, r, out)
			return
		}
	}
	if !utf8.ValidString(out) {
		t.Errorf("%s prints invalid UTF-8:\n%q", what, out)
	}
}

// TestHostileMediaLabel: a btrfs stick whose label would forge records in
// blkid's raw output, next to a real ext4 disk, through the real daemon on
// one host and its peer: each listed as itself, with its real label; no
// phantom device; `where ROOT` finds nothing; the human list shows the
// label escaped.
func TestHostileMediaLabel(t *testing.T) {
	testutil.RequiresTool(t, "losetup", "mkfs.btrfs", "mkfs.ext4", "blkid")
	hosts := testutil.Hosts(t, 2)
	stick, data := newLoopDev(t), newLoopDev(t)
	losetup(t, stick, testutil.LoopImage(t, 128, "mkfs.btrfs", "-q", "-f", "-U", hostileUUID, "-L", hostileLabel))
	losetup(t, data, testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-U", dataUUID, "-L", "DATA"))
	h1 := startOn(t, hosts[0], []string{stick, data})
	h2 := startOn(t, hosts[1], nil)
	testutil.Eventually(t, peerWait, "both disks of h1 on h2", func() bool { return presentOn(t, h2, "dkd-h1") == 2 })

	// JSON carries the text exactly; its one byte that is not UTF-8 is
	// U+FFFD in JSON (and on the wire, whose text is UTF-8).
	wantLabel := strings.ToValidUTF8(hostileLabel, "\uFFFD")
	for _, c := range []struct {
		name string
		d    *testutil.Daemon
	}{{"h1", h1}, {"h2", h2}} {
		all := listJSON(t, c.d)
		mine := disksOn(t, c.d, "dkd-h1")
		if len(mine) != 2 {
			t.Errorf("%s lists %d disks for h1, want 2: %+v", c.name, len(mine), mine)
		}
		byDev := map[string]disk.Disk{}
		for _, d := range mine {
			byDev[d.Device] = d
		}
		if d := byDev[stick]; d.UUID != hostileUUID || d.Label != wantLabel || d.Type != "btrfs" || !d.Present {
			t.Errorf("%s: the stick is listed as %+v", c.name, d)
		}
		if d := byDev[data]; d.UUID != dataUUID || d.Label != "DATA" || d.Type != "ext4" || !d.Present {
			t.Errorf("%s: the data disk is listed as %+v", c.name, d)
		}
		for _, d := range all {
			if d.Device == "/dev/loop200" || d.Device == "/dev/loop201" || d.Label == "ROOT" || d.UUID == "forged" {
				t.Errorf("%s lists a phantom: %+v", c.name, d)
			}
		}
		if out, _, code := c.d.Ctl("where", "ROOT"); code != 1 {
			t.Errorf("%s: where ROOT exit %d: %s", c.name, code, out)
		}
		out := c.d.MustCtl("list")
		checkTerminalSafe(t, c.name+" list", out)
		if !strings.Contains(out, `inj\x0aDEVNAME=/dev/loop200\x0aLABEL=ROOT`) || !strings.Contains(out, `\x1b[2J\u009b31m`) {
			t.Errorf("%s list does not show the label escaped:\n%s", c.name, out)
		}
		if !strings.Contains(c.d.MustCtl("where", hostileUUID), "is on dkd-h1 as "+stick) {
			t.Errorf("%s: where by the stick's UUID", c.name)
		}
	}
}

// TestHostilePeerStrings: a peer whose node name holds an ESC sequence
// and a C1 CSI, with a disk mounted on a directory whose name holds one,
// is listed by list, peers, where and watch on another host with nothing
// a terminal would act on; the peer's own diskctl shows the mountpoint
// escaped. A stranger's crafted datagrams with control characters in a
// node name, a device or a mountpoint are dropped and counted
// (drop_control_char); one with them in a label is kept and shown escaped.
func TestHostilePeerStrings(t *testing.T) {
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid", "mount", "umount")
	hosts := testutil.Hosts(t, 3)
	dev := newLoopDev(t)
	img := testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "PEERDISK")
	evilName := "\x1b[31mEVIL\u009b2J"
	h1 := startOn(t, hosts[0], []string{dev}, "--node-name", evilName)
	h2 := startOn(t, hosts[1], nil)
	sentName := "\uFFFD[31mEVIL\uFFFD2J" // what h1 announces: see wire.clipName
	testutil.Eventually(t, peerWait, "h1 online on h2", func() bool { return onlineOn(t, h2, sentName) })

	// watch on h2 from before the disk appears.
	_, diskctl := testutil.Binaries(t)
	watch := exec.Command(diskctl, "--socket", h2.Socket, "watch")
	var watchOut bytes.Buffer
	watch.Stdout = &watchOut
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { watch.Process.Kill(); watch.Wait() })

	// The disk appears on h1 and is mounted on a hostile directory in
	// h1's mount namespace.
	losetup(t, dev, img)
	mnt := filepath.Join(t.TempDir(), "mnt\x1b[32m\u009b")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := hosts[0].Command("mount", dev, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { hosts[0].Command("umount", mnt).Run() })
	testutil.Eventually(t, peerWait, "h1 sees its disk mounted", func() bool {
		ds := disksOn(t, h1, evilName)
		return len(ds) == 1 && len(ds[0].Mounts) == 1
	})
	testutil.Eventually(t, peerWait, "PEERDISK on h2", func() bool {
		g := find(listJSON(t, h2), "PEERDISK")
		return g != nil && g.Present && g.Host == sentName
	})
	// The mountpoint is left out of what h1 sends (receivers would drop
	// it); h1's own JSON keeps it exactly.
	if g := find(listJSON(t, h2), "PEERDISK"); len(g.Mounts) != 0 {
		t.Errorf("h2 got h1's mountpoints %q", g.Mounts)
	}
	if g := find(listJSON(t, h1), "PEERDISK"); len(g.Mounts) != 1 || g.Mounts[0] != mnt {
		t.Errorf("h1's own JSON has mountpoints %q, want %q", g.Mounts, mnt)
	}
	testutil.Eventually(t, peerWait, "h1 counts its disk as trimmed", func() bool {
		return status(t, h1).Network.Counters["local_disks_trimmed"] == 1
	})

	// A stranger (h3, no daemon) sends crafted datagrams.
	tap := newWireTap(t, hosts[2])
	stranger := craftNode(0xaa)
	tap.Send(netip.Addr{}, stranger.heartbeat("stranger"), stranger.announce("stranger", map[int]any{1: "sdx", 2: "/dev/sdx", 6: "LBL\x1b]0;owned\x07\u009b", 13: []string{"/ok"}}))
	forged := []*craftedNode{craftNode(0xb1), craftNode(0xb2), craftNode(0xb3), craftNode(0xb4)}
	tap.Send(netip.Addr{}, forged[0].heartbeat("\x1b[2Jforged"),
		forged[1].announce("f1", map[int]any{1: "sdy", 2: "/dev/\u009b"}),
		forged[2].announce("f2", map[int]any{1: "sdz", 2: "/dev/sdz", 13: []string{"/mnt/\x1b[31m"}}),
		forged[3].announce("\u0085nel", map[int]any{1: "sdw"}))
	testutil.Eventually(t, peerWait, "the stranger's disk on h2, the forged datagrams counted", func() bool {
		g := find(listJSON(t, h2), "LBL\x1b]0;owned\x07\u009b")
		return g != nil && status(t, h2).Network.Counters["drop_control_char"] >= 4
	})
	for _, n := range peersOf(t, h2) {
		if strings.Contains(n.Name, "forged") || n.Name == "f1" || n.Name == "f2" || strings.Contains(n.Name, "nel") {
			t.Errorf("h2 accepted a forged node %+v", n)
		}
	}

	// Every human output, on both hosts: nothing a terminal acts on.
	for _, c := range []struct {
		what string
		d    *testutil.Daemon
		args []string
	}{
		{"h2 list", h2, []string{"list"}}, {"h2 peers", h2, []string{"peers"}}, {"h2 where", h2, []string{"where", "PEERDISK"}},
		{"h2 where stranger", h2, []string{"where", "LBL\x1b]0;owned\x07\u009b"}}, {"h2 status", h2, []string{"status"}},
		{"h1 list", h1, []string{"list"}}, {"h1 where", h1, []string{"where", "PEERDISK"}}, {"h1 localhost", h1, []string{"localhost"}},
		{"h1 status", h1, []string{"status"}},
	} {
		out := c.d.MustCtl(c.args...)
		checkTerminalSafe(t, c.what, out)
		t.Logf("%s:\n%s", c.what, out)
	}
	if out := h2.MustCtl("peers"); !strings.Contains(out, "\uFFFD[31mEVIL\uFFFD2J") {
		t.Errorf("h2 peers does not name h1:\n%s", out)
	}
	if out := h2.MustCtl("list"); !strings.Contains(out, `LBL\x1b]0;owned\x07\u009b`) {
		t.Errorf("h2 list does not show the stranger's label escaped:\n%s", out)
	}
	if out := h1.MustCtl("list"); !strings.Contains(out, `mnt\x1b[32m\u009b`) {
		t.Errorf("h1 list does not show its mountpoint escaped:\n%s", out)
	}
	// The where query itself is echoed escaped.
	if out, _, _ := h2.Ctl("where", "nothing\x1b[5m"); !strings.Contains(out, `nothing\x1b[5m: not known`) {
		t.Errorf("where echoes %q", out)
	}

	testutil.Eventually(t, peerWait, "watch on h2 saw PEERDISK and the stranger's disk", func() bool {
		out := watchText(&watchOut)
		return strings.Contains(out, "PEERDISK") && strings.Contains(out, `LBL\x1b]0;owned\x07\u009b`)
	})
	watch.Process.Kill()
	watch.Wait()
	out := watchOut.String()
	checkTerminalSafe(t, "h2 watch", out)
	t.Logf("h2 watch:\n%s", out)
}

// TestHostileKeyedPeer: a peer that holds the network's key (gone bad, or
// buggy) is held to the same rule: a heartbeat with an ESC sequence in its
// node name, correctly tagged, is dropped as control_char; the same from
// a stranger without the key never gets past the tag check.
func TestHostileKeyedPeer(t *testing.T) {
	hosts := testutil.Hosts(t, 2)
	const secret = "0123456789abcdef0123456789abcdef"
	h1 := startOn(t, hosts[0], nil, "--key-file", writeKeyFile(t, "7 "+secret+"\n"))
	tap := newWireTap(t, hosts[1])
	// The socket answers before the peer network has joined its group
	// (that follows the first scan): a datagram sent earlier is not heard.
	testutil.Eventually(t, peerWait, "h1's peer network up", func() bool {
		n := status(t, h1).Network
		return n != nil && len(n.Interfaces) > 0
	})
	bad, stranger, good := craftNode(0xc1), craftNode(0xc2), craftNode(0xc3)
	tap.Send(netip.Addr{}, bad.keyed(7, secret, bad.heartbeat("\x1b[2Jbad")),
		stranger.heartbeat("\x1b[2Jstranger"),
		good.keyed(7, secret, good.heartbeat("keyed-ok")))
	testutil.Eventually(t, peerWait, "the keyed node listed, the others dropped and counted", func() bool {
		c := status(t, h1).Network.Counters
		return onlineOn(t, h1, "keyed-ok") && c["drop_control_char"] >= 1 && c["drop_untagged"] >= 1
	})
	for _, n := range peersOf(t, h1) {
		if strings.Contains(n.Name, "bad") || strings.Contains(n.Name, "stranger") {
			t.Errorf("h1 accepted %+v", n)
		}
	}
}

// watchText reads what the watch printed so far (the buffer is written by
// the process's copy goroutine; lines are read whole).
func watchText(b *bytes.Buffer) string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(bytes.Clone(b.Bytes())))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines, "\n")
}

// craftedNode makes datagrams the way a stranger on the link would, with
// any text in any field (wire.Encoder would not make them).
type craftedNode struct {
	id       [16]byte
	instance uint64
	seq      uint64
}

func craftNode(b byte) *craftedNode {
	n := &craftedNode{instance: uint64(time.Now().UnixMilli()) << 16}
	for i := range n.id {
		n.id[i] = b
	}
	return n
}

func (n *craftedNode) datagram(typ wire.Type, body []byte) []byte {
	n.seq++
	b := make([]byte, wire.HeaderSize)
	copy(b, wire.Magic)
	b[4], b[5] = wire.Version, byte(typ)
	copy(b[8:24], n.id[:])
	binary.BigEndian.PutUint64(b[24:], n.instance)
	binary.BigEndian.PutUint64(b[32:], n.seq)
	binary.BigEndian.PutUint64(b[40:], 1)
	return append(b, body...)
}

// keyed tags datagram b with key id and secret, as a holder of the key
// would (docs/protocol.md, Authentication).
func (n *craftedNode) keyed(id byte, secret string, b []byte) []byte {
	b[6], b[7] = 1, id
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(b)
	return append(b, m.Sum(nil)[:wire.TagSize]...)
}

func mustCBOR(v any) []byte {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	b, err := em.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func (n *craftedNode) heartbeat(name string) []byte {
	return n.datagram(wire.TypeHeartbeat, mustCBOR(map[int]any{1: name, 2: make([]byte, 8), 3: 60000}))
}

// announce sends one disk (a CBOR map by key number) in one chunk, with
// the right digest.
func (n *craftedNode) announce(name string, d map[int]any) []byte {
	entry := mustCBOR(d)
	sum := sha256.Sum256(entry)
	return n.datagram(wire.TypeAnnounce, mustCBOR(map[int]any{1: name, 2: sum[:8], 3: 0, 4: 1, 5: []cbor.RawMessage{entry}}))
}
