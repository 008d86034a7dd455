package dbusapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/testutil"
)

// decodeBody frames body as a signal and decodes it with godbus, which
// checks alignment, lengths and padding as it goes.
func decodeBody(t *testing.T, sig string, body []byte) []any {
	t.Helper()
	raw := appendMessage(nil, header{typ: dbus.TypeSignal, path: "/a", iface: "a.b", member: "C"}, 7, sig, body)
	msg, err := dbus.DecodeMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("godbus cannot decode (%s): %v", sig, err)
	}
	if got := msg.Headers[dbus.FieldSignature].Value().(dbus.Signature).String(); got != sig {
		t.Fatalf("signature %q, want %q", got, sig)
	}
	if msg.Serial() != 7 || msg.Headers[dbus.FieldMember].Value() != "C" || msg.Headers[dbus.FieldPath].Value() != dbus.ObjectPath("/a") {
		t.Fatalf("header decoded as %v serial %d", msg.Headers, msg.Serial())
	}
	return msg.Body
}

// wireObjects cover every property type and the edge cases of the
// encoding: empty and several mounts, no filesystem, no addresses, empty
// strings, odd lengths that move the alignment.
func wireObjects() map[dbus.ObjectPath]object {
	t0, t1 := time.UnixMicro(1_700_000_000_000_001), time.UnixMicro(1_700_000_100_000_000)
	ds := []disk.Disk{
		{Node: localID, Host: "alpha", Name: "loop3", Device: "/dev/loop3", MajMin: "7:3", UUID: "1111-2222", Label: "BACKUP",
			Type: "ext4", Usage: "filesystem", Size: 64 << 20, Mounts: []string{"/mnt/backup", "/srv/x y", "/"},
			Present: true, FirstSeen: t0, LastSeen: t1, ReadOnly: true, Removable: true, PartUUID: "p-1", PartLabel: "pl"},
		{Node: localID, Host: "alpha", Name: "dm-0", Device: "/dev/dm-0", MajMin: "253:0", Type: "crypto_LUKS", Usage: "crypto", Size: 1 << 30},
		{Node: peerID, Host: "b", Name: "sdb1", Device: "/dev/sdb1", Label: "PHÖTOS ✓", Type: "xfs", Mounts: []string{}, NotUnique: true},
		{Node: peerID, Name: "x", Mounts: []string{""}},
	}
	out := map[dbus.ObjectPath]object{
		contract.ManagerPath: managerObj{version: "1.2.3-odd", local: disk.Node{ID: localID, Name: "alpha"}},
		contract.MachinePath(localID): machineObj{disk.Node{ID: localID, Name: "alpha", Addresses: []string{"10.0.0.1", "fe80::1%eth0"},
			Local: true, Online: true, LastSeen: t1, Disks: 3}},
		contract.MachinePath(peerID): machineObj{disk.Node{ID: peerID, Name: "b"}},
	}
	for _, d := range ds {
		out[contract.BlockPath(d.Key())] = blockObj{d}
	}
	return out
}

// TestWireEncodingMatchesGodbus: what the adapter encodes itself decodes,
// with godbus, to the values godbus would have encoded, for every object
// kind (as a cached entry and as a signal), and LastSeen sits where the
// entry says.
func TestWireEncodingMatchesGodbus(t *testing.T) {
	for p, o := range wireObjects() {
		ifs := o.ifaces()
		en, err := encodeEntry(p, ifs)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		got := decodeBody(t, "oa{sa{sv}}", en.b)
		if got[0] != p {
			t.Errorf("path %v, want %s", got[0], p)
		}
		if !reflect.DeepEqual(got[1], map[string]map[string]dbus.Variant(ifs)) {
			t.Errorf("%s: decoded\n%v\nwant\n%v", p, got[1], ifs)
		}
		// The LastSeen offset: overwrite it and decode again.
		us, live := o.liveUsec()
		if live != (en.lastSeen >= 0) {
			t.Fatalf("%s: LastSeen offset %d, but liveUsec says %v", p, en.lastSeen, live)
		}
		if live {
			b := bytes.Clone(en.b)
			copy(b[en.lastSeen:], []byte{1, 2, 3, 4, 5, 6, 7, 8})
			again := decodeBody(t, "oa{sa{sv}}", b)[1].(map[string]map[string]dbus.Variant)
			for in, props := range again {
				if v, ok := props["LastSeen"]; ok && v.Value() != uint64(0x0807060504030201) {
					t.Errorf("%s: %s.LastSeen = %v after patching (was %d)", p, in, v, us)
				}
			}
		}
		// Signals: the same encoder, arguments of each shape.
		for _, args := range [][]any{
			{p, ifs},
			{contract.BlockInterface, contract.Props{"IdLabel": dbus.MakeVariant("x"), "Size": dbus.MakeVariant(uint64(3))}, []string{}},
			{p, []string{contract.BlockInterface, contract.FilesystemInterface}},
		} {
			sig, body, err := encodeArgs(args...)
			if err != nil {
				t.Fatal(err)
			}
			if want := dbus.SignatureOf(args...).String(); sig != want {
				t.Errorf("signature %s, godbus says %s", sig, want)
			}
			got := decodeBody(t, sig, body)
			for i := range args {
				want := args[i]
				switch v := want.(type) {
				case contract.Ifaces:
					want = map[string]map[string]dbus.Variant(v)
				case contract.Props:
					want = map[string]dbus.Variant(v)
				}
				if !reflect.DeepEqual(got[i], want) {
					t.Errorf("argument %d: decoded %#v, want %#v", i, got[i], want)
				}
			}
		}
	}
}

// TestWireRefusesWhatGodbusRefuses: strings godbus would not send (and a
// bus would disconnect us for) are errors, with godbus's words.
func TestWireRefusesWhatGodbusRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []any
	}{
		{"not UTF-8", []any{"a\xffb"}},
		{"NUL", []any{contract.Props{"IdLabel": dbus.MakeVariant("a\x00b")}}},
		{"bad path", []any{dbus.ObjectPath("/a//b")}},
		{"unknown type", []any{int16(3)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := encodeArgs(tc.args...)
			if err == nil {
				t.Fatal("encoded")
			}
			msg := &dbus.Message{Type: dbus.TypeSignal, Headers: map[dbus.HeaderField]dbus.Variant{
				dbus.FieldPath: dbus.MakeVariant(dbus.ObjectPath("/a")), dbus.FieldInterface: dbus.MakeVariant("a.b"),
				dbus.FieldMember: dbus.MakeVariant("C"), dbus.FieldSignature: dbus.MakeVariant(dbus.SignatureOf(tc.args...))},
				Body: tc.args}
			gerr := msg.IsValid()
			if gerr == nil && tc.name != "unknown type" {
				t.Fatalf("godbus encodes it; we refuse with %v", err)
			}
			if gerr != nil && err.Error() != gerr.Error() {
				t.Errorf("we say %q, godbus %q", err, gerr)
			}
		})
	}
}

// fill10k puts 10,000 disks on the network: 10 peers of 1,000.
func fill10k(e *env) {
	for p := range 10 {
		id := disk.NodeID(fmt.Sprintf("%032x", p+1))
		var ds []disk.Disk
		for i := range 1000 {
			n := fmt.Sprintf("sd%d", i)
			ds = append(ds, disk.Disk{Name: n, Device: "/dev/" + n, MajMin: fmt.Sprintf("8:%d", i),
				UUID: fmt.Sprintf("%08x-0000-4000-8000-%012x", p, i), Label: fmt.Sprintf("DATA%d", i),
				Type: "ext4", Usage: "filesystem", Size: 1 << 30, Mounts: []string{"/srv/" + n}})
		}
		e.st.ApplyPeer(disk.Node{ID: id, Name: fmt.Sprintf("host%02d", p)}, ds)
	}
}

// gdbusKey is an object path as a dictionary key in gdbus's output.
var gdbusKey = regexp.MustCompile(`'/org/diskd/Diskd1/[^']*': \{`)

// TestClientsReadWhatGodbusWrote: GetManagedObjects as busctl, gdbus,
// Gio (python3-gi) and godbus read it, from the adapter's own encoding,
// equals what they read when godbus encoded the same state (the adapter
// before it encoded its own), for the fixture and for 10,000 disks.
func TestClientsReadWhatGodbusWrote(t *testing.T) {
	testutil.RequiresTool(t, "busctl", "gdbus")
	for _, tc := range []struct {
		name string
		fill func(e *env)
		want int // objects
	}{
		{"fixture", (*env).fixture, 3 + 2 + 1},
		{"10,000 disks", fill10k, 10_000 + 11 + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tc.fill(e)
			type view struct {
				busctl any
				gdbus  int
				gio    testutil.GioState
				godbus map[dbus.ObjectPath]map[string]map[string]dbus.Variant
				writes uint64
			}
			read := func(godbusOnly bool) view {
				var sock *busSocket
				e.runService(Config{}, func(s *Service) {
					s.godbusOnly = godbusOnly
					s.onConnect = func(b *busSocket) { sock = b }
				})
				e.waitConnected()
				c := e.client()
				var v view
				waitFor(t, "every object published", func() bool {
					v.godbus = nil
					err := c.Object(contract.BusName, contract.RootPath).Call(contract.ObjectManagerInterface+".GetManagedObjects", 0).Store(&v.godbus)
					return err == nil && len(v.godbus) == tc.want
				})
				if (sock == nil) != godbusOnly {
					t.Fatalf("godbusOnly %v, but the adapter's socket is %v", godbusOnly, sock)
				}
				out := e.busctl("--json=short", "call", contract.BusName, contract.RootPath, contract.ObjectManagerInterface, "GetManagedObjects")
				if err := json.Unmarshal([]byte(out), &v.busctl); err != nil {
					t.Fatalf("busctl --json: %v", err)
				}
				gd := run(t, "gdbus", "call", "--address", e.bus.Address, "--dest", contract.BusName,
					"--object-path", contract.RootPath, "--method", contract.ObjectManagerInterface+".GetManagedObjects")
				v.gdbus = len(gdbusKey.FindAllString(gd, -1))
				t0 := time.Now()
				g := testutil.StartGioClients(t, e.bus.Address)
				g.New()
				v.gio = g.Dump().Clients[0]
				t.Logf("gio %v", time.Since(t0))
				if sock != nil {
					v.writes = sock.writes.Load()
				}
				e.stop()
				return v
			}
			old, now := read(true), read(false)
			if !reflect.DeepEqual(old.godbus, now.godbus) {
				t.Error("godbus decodes something else")
			}
			if !reflect.DeepEqual(old.busctl, now.busctl) {
				t.Error("busctl --json shows something else")
			}
			if old.gdbus != tc.want || now.gdbus != tc.want {
				t.Errorf("gdbus shows %d objects, then %d; want %d", old.gdbus, now.gdbus, tc.want)
			}
			if d := now.gio.Diff(old.gio, nil); len(d) > 0 || len(now.gio) != tc.want {
				t.Errorf("Gio holds %d objects, and differs:\n%s", len(now.gio), strings.Join(d[:min(len(d), 20)], "\n"))
			}
			if now.writes == 0 {
				t.Error("the adapter wrote nothing of its own")
			}
		})
	}
}

// thousand is 1,000 local disks, labelled for generation gen.
func thousand(gen int) []disk.Disk {
	ds := make([]disk.Disk, 1000)
	for i := range ds {
		n := fmt.Sprintf("loop%d", i)
		ds[i] = disk.Disk{Name: n, Device: "/dev/" + n, UUID: fmt.Sprintf("%08x-0000-4000-8000-000000000000", i),
			Label: fmt.Sprintf("L%d-%d", i, gen), Type: "ext4", Usage: "filesystem"}
	}
	return ds
}

// TestBatchLeavesInOneBurst: 1,000 disks changed at once reach a bus
// monitor as 1,000 signals written in a few writes, not one each.
func TestBatchLeavesInOneBurst(t *testing.T) {
	e := newEnv(t)
	e.st.SetLocal(thousand(0))
	var sock *busSocket
	e.runService(Config{}, func(s *Service) { s.onConnect = func(b *busSocket) { sock = b } })
	e.waitConnected()
	mon := e.monitorConn(t, "type='signal',sender='"+contract.BusName+"',member='PropertiesChanged'")
	w0 := sock.writes.Load()
	e.st.SetLocal(thousand(1))
	seen := 0
	timeout := time.After(20 * time.Second)
	for seen < 1000 {
		select {
		case m := <-mon:
			if len(m.Body) > 1 {
				if l, ok := m.Body[1].(map[string]dbus.Variant)["IdLabel"]; ok && strings.HasSuffix(l.Value().(string), "-1") {
					seen++
				}
			}
		case <-timeout:
			t.Fatalf("%d of 1,000 signals seen", seen)
		}
	}
	// One batch is one write; the store may hand the changes over in a
	// few batches, and godbus writes nothing meanwhile.
	if w := sock.writes.Load() - w0; w > 10 {
		t.Errorf("1,000 signals took %d writes", w)
	}
}

// TestDialBus: which addresses diskd dials itself, and that it tries the
// entries of a list in order.
func TestDialBus(t *testing.T) {
	bus := testutil.StartDBus(t)
	for _, tc := range []struct {
		addr    string
		ok      bool
		notUnix bool
	}{
		{bus.Address, true, false},
		{"unix:path=/nonexistent/bus;" + bus.Address, true, false},
		{"tcp:host=127.0.0.1,port=1", false, true},
		{"unix:tmpdir=/tmp", false, true},
		{"unix:path=/nonexistent/bus", false, false},
		{"unix:path=%zz", false, false},
	} {
		sock, err := dialBus(context.Background(), tc.addr)
		if sock != nil {
			sock.Close()
		}
		if (err == nil) != tc.ok || errors.Is(err, errNotUnix) != tc.notUnix {
			t.Errorf("dialBus(%q): %v", tc.addr, err)
		}
	}
}
