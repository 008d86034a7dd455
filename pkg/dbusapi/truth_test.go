package dbusapi

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/testutil"
)

// contractInterfaces is the contract by interface name.
func contractInterfaces(t testing.TB) map[string]contract.Interface {
	t.Helper()
	ifs, err := contract.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]contract.Interface{}
	for _, in := range ifs {
		out[in.Name] = in
	}
	return out
}

// model is a client that starts from GetManagedObjects and applies the
// signals, as a Gio or sd-bus object manager client does. It checks the
// "const" properties never change.
type model struct {
	t       testing.TB
	ifs     map[string]contract.Interface
	objects map[dbus.ObjectPath]contract.Ifaces
}

func (m *model) emit(path dbus.ObjectPath, name string, args ...any) error {
	switch name {
	case contract.ObjectManagerInterface + ".InterfacesAdded":
		p, added := args[0].(dbus.ObjectPath), args[1].(contract.Ifaces)
		if m.objects[p] == nil {
			m.objects[p] = contract.Ifaces{}
		}
		for in, props := range added {
			m.objects[p][in] = maps.Clone(props)
		}
	case contract.ObjectManagerInterface + ".InterfacesRemoved":
		p, removed := args[0].(dbus.ObjectPath), args[1].([]string)
		for _, in := range removed {
			delete(m.objects[p], in)
		}
		if len(m.objects[p]) == 0 {
			delete(m.objects, p)
		}
	case contract.PropertiesInterface + ".PropertiesChanged":
		in, changed := args[0].(string), args[1].(contract.Props)
		props, ok := m.objects[path][in]
		if !ok {
			m.t.Errorf("PropertiesChanged on %s %s, which the client does not know", path, in)
			return nil
		}
		for k, v := range changed {
			if m.ifs[in].EmitsChangedSignal(k) == "const" {
				m.t.Errorf("%s: %s.%s is const in the contract, but changed from %v to %v", path, in, k, props[k], v)
			}
			props[k] = v
		}
	default:
		m.t.Errorf("unexpected signal %s", name)
	}
	return nil
}

// diff compares what a client holds with what the bus serves, leaving out
// the properties the contract says change without a signal.
func diff(ifs map[string]contract.Interface, client, served map[dbus.ObjectPath]contract.Ifaces) []string {
	var out []string
	for _, p := range slices.Sorted(maps.Keys(served)) {
		if _, ok := client[p]; !ok {
			out = append(out, fmt.Sprintf("%s: served, unknown to the client", p))
		}
	}
	for _, p := range slices.Sorted(maps.Keys(client)) {
		s, ok := served[p]
		if !ok {
			out = append(out, fmt.Sprintf("%s: held by the client, not served", p))
			continue
		}
		c := client[p]
		for _, in := range slices.Sorted(maps.Keys(s)) {
			if _, ok := c[in]; !ok {
				out = append(out, fmt.Sprintf("%s: %s served, unknown to the client", p, in))
			}
		}
		for _, in := range slices.Sorted(maps.Keys(c)) {
			sp, ok := s[in]
			if !ok {
				out = append(out, fmt.Sprintf("%s: %s held by the client, not served", p, in))
				continue
			}
			for _, k := range slices.Sorted(maps.Keys(sp)) {
				if ifs[in].EmitsChangedSignal(k) == "false" {
					continue
				}
				if cv, ok := c[in][k]; !ok || !sameVariant(cv, sp[k]) {
					out = append(out, fmt.Sprintf("%s: %s.%s: client holds %v, served %v", p, in, k, c[in][k], sp[k]))
				}
			}
		}
	}
	return out
}

// offline is a server whose signals go to a model client instead of a
// bus, over a real store.
type offline struct {
	st    *store.Store
	srv   *server
	sub   *store.Subscription
	model *model
	now   time.Time
}

func newOffline(t testing.TB, opts store.Options) *offline {
	o := &offline{now: time.UnixMicro(1_700_000_000_000_000)}
	opts.Local = disk.Node{ID: localID, Name: "alpha"}
	opts.Now = func() time.Time { return o.now }
	o.st = store.New(opts)
	o.srv = &server{svc: New(Config{Version: "test-1"}, o.st, &fakeBackend{}, nil)}
	o.model = &model{t: t, ifs: contractInterfaces(t), objects: map[dbus.ObjectPath]contract.Ifaces{}}
	o.srv.om = newObjectManager(contract.RootPath, o.model.emit)
	// As session does: subscribe, load, and a client reads.
	o.sub = o.st.Subscribe(1 << 16)
	t.Cleanup(o.sub.Close)
	o.srv.om.load(o.srv.svc.snapshot())
	o.model.objects = o.served(t)
	return o
}

// served is GetManagedObjects's answer.
func (o *offline) served(t testing.TB) map[dbus.ObjectPath]contract.Ifaces {
	t.Helper()
	out, err := o.srv.getManagedObjects(nil)
	if err != nil {
		t.Fatal(err)
	}
	return out[0].(map[dbus.ObjectPath]contract.Ifaces)
}

// flush applies every store event queued so far as one batch.
func (o *offline) flush(t testing.TB) {
	var batch []disk.Event
	for {
		select {
		case ev := <-o.sub.C:
			batch = append(batch, ev)
			continue
		default:
		}
		break
	}
	if len(batch) > 0 {
		o.srv.apply(batch)
	}
}

// check fails unless the client, having applied every signal, holds what
// GetManagedObjects, Get and GetAll serve.
func (o *offline) check(t testing.TB, when string) {
	t.Helper()
	served := o.served(t)
	if d := diff(o.model.ifs, o.model.objects, served); len(d) > 0 {
		t.Fatalf("%s: the bus serves what no signal told the client:\n%s", when, strings.Join(d, "\n"))
	}
	// Get and GetAll answer from the same state.
	for p, ifs := range served {
		for in, props := range ifs {
			got, err := o.srv.propsOf(p, in)
			if err != nil {
				t.Fatalf("%s: GetAll %s %s: %v", when, p, in, err)
			}
			for k, v := range props {
				if !sameVariant(got[k], v) {
					t.Fatalf("%s: GetAll %s %s.%s = %v, GetManagedObjects %v", when, p, in, k, got[k], v)
				}
			}
		}
	}
}

// TestServedIsWhatWasSignalled drives a real store through random changes
// (local scans, peers reporting, going quiet and being forgotten, disks
// gaining and losing a filesystem, flipping back and forth inside one
// batch, times advancing) and checks, after every change and every batch,
// that a client that read once and applied the signals holds exactly what
// the bus serves. That is the contract's EmitsChangedSignal annotations
// kept: a property that changed without a signal must say "false", and
// one that says "const" must never change.
func TestServedIsWhatWasSignalled(t *testing.T) {
	o := newOffline(t, store.Options{MaxPeers: 2})
	rng := rand.New(rand.NewPCG(9, 2))
	names := []string{"loop1", "loop2", "sda1", "dm-0"}
	inventory := func() []disk.Disk {
		var ds []disk.Disk
		for _, n := range names {
			if rng.IntN(3) == 0 {
				continue
			}
			d := disk.Disk{Name: n, Device: "/dev/" + n, Label: []string{"A", "B"}[rng.IntN(2)],
				Type: []string{"ext4", "swap"}[rng.IntN(2)], Size: uint64(1+rng.IntN(2)) << 20}
			if rng.IntN(3) == 0 {
				d.Mounts = []string{"/mnt/" + n}
			}
			ds = append(ds, d)
		}
		return ds
	}
	peers := []disk.NodeID{peerID, "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3", "d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4"}
	var last []disk.Disk
	for step := range 2000 {
		o.now = o.now.Add(time.Duration(1+rng.IntN(3000)) * time.Millisecond)
		var what string
		switch op := rng.IntN(10); {
		case op < 3:
			last = inventory()
			o.st.SetLocal(last)
			what = "local scan"
		case op < 4:
			o.st.SetLocal(last) // the same again: only times move
			what = "same local scan"
		case op < 6:
			id := peers[rng.IntN(len(peers))]
			o.st.ApplyPeer(disk.Node{ID: id, Name: "peer-" + string(id[:2])}, inventory())
			what = "peer report from " + string(id[:2])
		case op < 7:
			id := peers[rng.IntN(len(peers))]
			o.st.TouchPeer(disk.Node{ID: id, Name: "peer-" + string(id[:2])})
			what = "heartbeat from " + string(id[:2])
		case op < 8:
			id := peers[rng.IntN(len(peers))]
			o.st.SetPeerOffline(id)
			what = "peer " + string(id[:2]) + " offline"
		case op < 9:
			o.st.SetLocalAddresses([]string{fmt.Sprintf("10.0.0.%d", 1+rng.IntN(2))})
			what = "local addresses"
		default:
			o.flush(t)
			what = "batch signalled"
		}
		o.check(t, fmt.Sprintf("step %d (%s)", step, what))
	}
	o.flush(t)
	o.check(t, "end")
	if n := len(o.model.objects); n < 5 {
		t.Errorf("only %d objects at the end: the changes did not exercise much", n)
	}
}

// TestFlipInsideOneBatch: a disk seen gone and back (or back and gone)
// between two batches is never served in the middle state, and the batch
// signals no change of Present; the next real change is signalled.
func TestFlipInsideOneBatch(t *testing.T) {
	o := newOffline(t, store.Options{})
	d := disk.Disk{Name: "loop3", Device: "/dev/loop3", Label: "FLIP", Type: "ext4"}
	p := blockAt(localID, d)
	present := func() bool {
		t.Helper()
		props, err := o.srv.propsOf(p, contract.BlockInterface)
		if err != nil {
			t.Fatal(err)
		}
		return props["Present"].Value().(bool)
	}
	var signalled []string
	emit := o.srv.om.emit
	o.srv.om.emit = func(path dbus.ObjectPath, name string, args ...any) error {
		if ch, ok := args[len(args)-2].(contract.Props); ok && name == contract.PropertiesInterface+".PropertiesChanged" {
			if v, ok := ch["Present"]; ok {
				signalled = append(signalled, fmt.Sprint(v.Value()))
			}
		}
		return emit(path, name, args...)
	}

	o.st.SetLocal([]disk.Disk{d})
	o.flush(t)
	// Present, gone and back within one batch.
	o.st.SetLocal(nil)
	if !present() {
		t.Fatal("gone, not yet signalled: served as gone (a client that read it would never be corrected)")
	}
	o.st.SetLocal([]disk.Disk{d})
	o.flush(t)
	if !present() || len(signalled) != 0 {
		t.Fatalf("gone and back: present %v, signalled Present %v; want present, no signal", present(), signalled)
	}
	o.check(t, "gone and back")

	// Gone for good: served as present until signalled.
	o.st.SetLocal(nil)
	if !present() {
		t.Error("served as gone before the signal")
	}
	o.flush(t)
	if present() || !slices.Equal(signalled, []string{"false"}) {
		t.Fatalf("after the batch: present %v, signalled Present %v; want gone, [false]", present(), signalled)
	}
	o.check(t, "gone")

	// Back and gone again within one batch.
	o.st.SetLocal([]disk.Disk{d})
	if present() {
		t.Error("back, not yet signalled: served as present")
	}
	o.st.SetLocal(nil)
	o.flush(t)
	if present() || len(signalled) != 1 {
		t.Errorf("back and gone: present %v, signalled Present %v; want gone, no new signal", present(), signalled)
	}
	o.check(t, "back and gone")
}

// TestWithLiveTakesTheUnsignalledProperties: what each kind of object
// takes live from the store is exactly the properties the contract marks
// EmitsChangedSignal "false".
func TestWithLiveTakesTheUnsignalledProperties(t *testing.T) {
	ifs := contractInterfaces(t)
	t0, t1 := time.UnixMicro(1_700_000_000_000_000), time.UnixMicro(1_700_000_100_000_000)
	signalled := disk.Disk{Node: localID, Host: "a", Name: "loop1", Device: "/dev/loop1", MajMin: "7:1", UUID: "u1",
		PartUUID: "p1", Label: "L1", PartLabel: "pl1", Type: "ext4", Usage: "filesystem", Size: 1, Mounts: []string{"/a"},
		Present: true, FirstSeen: t0, LastSeen: t0}
	live := disk.Disk{Node: peerID, Host: "b", Name: "loop2", Device: "/dev/loop2", MajMin: "7:2", UUID: "u2",
		PartUUID: "p2", Label: "L2", PartLabel: "pl2", Type: "xfs", Usage: "filesystem", Size: 2, Mounts: []string{"/b"},
		ReadOnly: true, Removable: true, FirstSeen: t1, LastSeen: t1}
	n1 := disk.Node{ID: localID, Name: "a", Addresses: []string{"10.0.0.1"}, Local: true, Online: true, LastSeen: t0, Disks: 1}
	n2 := disk.Node{ID: peerID, Name: "b", Addresses: []string{"10.0.0.2"}, LastSeen: t1, Disks: 2}
	for _, tc := range []struct {
		name       string
		sig, alive object
	}{
		{"block", blockObj{signalled}, blockObj{live}},
		{"machine", machineObj{n1}, machineObj{n2}},
		{"manager", managerObj{"1", n1}, managerObj{"2", n2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, after := tc.sig.ifaces(), tc.sig.withLive(tc.alive).ifaces()
			for in, props := range before {
				for k, v := range props {
					changed := !sameVariant(v, after[in][k])
					if quiet := ifs[in].EmitsChangedSignal(k) == "false"; changed != quiet {
						t.Errorf("%s.%s: taken live %v, but the contract says EmitsChangedSignal %q", in, k, changed, ifs[in].EmitsChangedSignal(k))
					}
				}
			}
		})
	}
}

// TestOrderedMethodsReplyOnce: GetManagedObjects, Get and GetAll write
// their own replies (to keep them ordered with the signals); godbus must
// not answer again, and errors and other methods are answered as before.
func TestOrderedMethodsReplyOnce(t *testing.T) {
	e := newEnv(t)
	e.fixture()
	e.runService(Config{})
	e.waitConnected()
	loop3 := uuidPath("1111-2222")
	e.waitPublished(string(loop3))
	c := e.client()
	// Replies are counted on the bus, by a monitor connection, whoever
	// wrote them (godbus or the adapter's own encoder).
	var mu sync.Mutex
	replies := map[uint32]int{} // reply serial -> replies
	seen := e.monitorConn(t, fmt.Sprintf("destination='%s'", c.Names()[0]))
	go func() {
		for msg := range seen {
			if msg.Type != dbus.TypeMethodReply && msg.Type != dbus.TypeError {
				continue
			}
			serial, _ := msg.Headers[dbus.FieldReplySerial].Value().(uint32)
			mu.Lock()
			replies[serial]++
			mu.Unlock()
		}
	}()
	obj := c.Object(contract.BusName, loop3)
	calls := []*dbus.Call{
		c.Object(contract.BusName, contract.RootPath).Call(contract.ObjectManagerInterface+".GetManagedObjects", 0),
		obj.Call(contract.PropertiesInterface+".Get", 0, contract.BlockInterface, "IdLabel"),
		obj.Call(contract.PropertiesInterface+".GetAll", 0, contract.BlockInterface),
		obj.Call(contract.PropertiesInterface+".Get", 0, contract.BlockInterface, "NoSuchProperty"),
		obj.Call(contract.IntrospectableIface+".Introspect", 0),
		c.Object(contract.BusName, contract.ManagerPath).Call(contract.ManagerInterface+".GetMachines", 0, map[string]dbus.Variant{}),
	}
	for i, call := range calls {
		if wantErr := i == 3; (call.Err != nil) != wantErr {
			t.Errorf("call %d (%s): %v", i, call.Method, call.Err)
		}
	}
	if v := calls[1].Body[0].(dbus.Variant).Value(); v != "BACKUP" {
		t.Errorf("Get IdLabel = %v", v)
	}
	waitFor(t, "every reply counted", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(replies) >= len(calls)
	})
	// A second answer would follow its first at once, on the same
	// connection: once a later call's reply is seen, all are counted.
	if err := c.Object(contract.BusName, contract.RootPath).Call("org.freedesktop.DBus.Peer.Ping", 0).Err; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ping's reply counted", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(replies) >= len(calls)+1
	})
	mu.Lock()
	defer mu.Unlock()
	for serial, n := range replies {
		if n != 1 {
			t.Errorf("call serial %d answered %d times", serial, n)
		}
	}
	if n := len(replies); n != len(calls)+1 {
		t.Errorf("%d calls answered, want %d", n, len(calls)+1)
	}
}

// TestGioClientsDuringFlips: 20 Gio object manager clients (python3-gi, as
// GNOME uses), created one by one while disks come, go, come back and
// change label faster than the signals are batched, end up holding what
// a fresh GetManagedObjects returns.
func TestGioClientsDuringFlips(t *testing.T) {
	e := startEnv(t, Config{})
	ifs := contractInterfaces(t)
	quiet := func(in, prop string) bool { return ifs[in].EmitsChangedSignal(prop) == "false" }
	names := []string{"loop1", "loop2", "loop3", "loop4", "loop5"}
	final := func(i int) disk.Disk {
		return disk.Disk{Name: names[i], Device: "/dev/" + names[i], Label: fmt.Sprintf("GIO%d", i), Type: "ext4"}
	}
	all := make([]disk.Disk, len(names))
	for i := range names {
		all[i] = final(i)
	}
	e.st.SetLocal(all)
	e.waitPublished(string(blockAt(localID, final(4))))

	g := testutil.StartGioClients(t, e.bus.Address)
	stop := make(chan struct{})
	flipped := make(chan int)
	go func() {
		rng := rand.New(rand.NewPCG(3, 4))
		n := 0
		defer func() { flipped <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var ds []disk.Disk
			for i := range names {
				switch rng.IntN(4) {
				case 0: // gone
				case 1:
					d := final(i)
					d.Label += "-relabelled"
					ds = append(ds, d)
				default:
					ds = append(ds, final(i))
				}
			}
			e.st.SetLocal(ds)
			n++
			if n%4 == 0 {
				time.Sleep(time.Millisecond) // pace: several flips per 10 ms batch
			}
		}
	}()
	for range 20 {
		g.New()
		time.Sleep(20 * time.Millisecond) // spread the clients over the burst
	}
	close(stop)
	flips := <-flipped
	e.st.SetLocal(all)
	t.Logf("%d inventories set during the clients' creation", flips)

	var dump testutil.GioDump
	waitFor(t, "a dump taken while the daemon is quiet, in the final state", func() bool {
		dump = g.Dump()
		if !dump.Settled(quiet) {
			return false
		}
		for i := range names {
			p := string(blockAt(localID, final(i)))
			b := dump.After[p][contract.BlockInterface]
			if b["Present"] != "true" || b["IdLabel"] != fmt.Sprintf("'GIO%d'", i) {
				return false
			}
		}
		return true
	})
	dump.Check(t, 20, quiet)
}
