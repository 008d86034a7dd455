package dbusapi

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
)

// The benchmarks run the adapter twice over the same store: "godbus",
// with godbus writing every message (the adapter as it was before it
// encoded its own), and "wire", as it runs now; the baselines are diskd's
// share in building the reply.

// BenchmarkGetManagedObjects10k: a client's GetManagedObjects through a
// real dbus-daemon with 10,000 disks on the network (10 peers of 1,000).
// "bus" is from the call to the reply decoded by a godbus client (whose
// decoding alone is ~300 ms of it); "wire" until the reply's last byte
// arrives at a client that does not decode it, which is the adapter's and
// the bus's share.
func BenchmarkGetManagedObjects10k(b *testing.B) {
	e := newEnv(b)
	fill10k(e)
	for _, mode := range []string{"godbus", "wire"} {
		e.runService(Config{}, func(s *Service) { s.godbusOnly = mode == "godbus" })
		e.waitConnected()
		c := e.client()
		obj := c.Object(contract.BusName, contract.RootPath)
		var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
		waitFor(b, "10,000 disks on the bus", func() bool {
			objs = nil
			err := obj.Call(contract.ObjectManagerInterface+".GetManagedObjects", 0).Store(&objs)
			return err == nil && len(objs) == 10_000+11+1
		})
		b.Run(mode+"/bus", func(b *testing.B) {
			for b.Loop() {
				// The body decodes to this type already; Store would copy it
				// all again through reflection.
				call := obj.Call(contract.ObjectManagerInterface+".GetManagedObjects", 0)
				if call.Err != nil {
					b.Fatal(call.Err)
				}
				objs = call.Body[0].(map[dbus.ObjectPath]map[string]map[string]dbus.Variant)
			}
			if len(objs) != 10_012 {
				b.Fatalf("%d objects", len(objs))
			}
		})
		b.Run(mode+"/wire", func(b *testing.B) {
			rc := dialRaw(b, e.bus.Address)
			var n int
			for b.Loop() {
				n = rc.call(b, contract.BusName, contract.RootPath, contract.ObjectManagerInterface, "GetManagedObjects")
			}
			b.ReportMetric(float64(n), "reply-bytes")
		})
		e.stop()
	}
	// diskd's share before: reading the store and building the reply
	// value (the baseline), then godbus encoding it (twice per send: once
	// to count file descriptors, once to write).
	srv := &server{svc: e.svc, om: newObjectManager(contract.RootPath, nil)}
	srv.om.load(e.svc.snapshot())
	b.Run("build", func(b *testing.B) {
		for b.Loop() {
			if _, err := srv.getManagedObjects(nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("godbus-encode", func(b *testing.B) {
		body, _ := srv.getManagedObjects(nil)
		msg := &dbus.Message{Type: dbus.TypeMethodReply, Headers: map[dbus.HeaderField]dbus.Variant{
			dbus.FieldReplySerial: dbus.MakeVariant(uint32(1)),
			dbus.FieldSignature:   dbus.MakeVariant(dbus.SignatureOf(body...)),
		}, Body: body}
		for b.Loop() {
			if _, err := msg.CountFds(); err != nil {
				b.Fatal(err)
			}
			var buf bytes.Buffer
			if err := msg.EncodeTo(&buf, binary.LittleEndian); err != nil {
				b.Fatal(err)
			}
		}
	})
	// diskd's share now: the body from the cached entries, the first time
	// (every entry encoded) and after.
	b.Run("wire-first", func(b *testing.B) {
		for b.Loop() {
			srv.om.load(e.svc.snapshot())
			if _, _, err := srv.managedObjectsWire(nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("wire-encode", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := srv.managedObjectsWire(nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSignalBurst1k: 1,000 disks change at once (one scan relabels
// them all); the time from the store change to the last of their signals
// seen by a bus monitor, and the write system calls the process made for
// it (the monitor only reads).
func BenchmarkSignalBurst1k(b *testing.B) {
	e := newEnv(b)
	gen := 0
	e.st.SetLocal(thousand(gen))
	for _, mode := range []string{"godbus", "wire"} {
		e.runService(Config{}, func(s *Service) { s.godbusOnly = mode == "godbus" })
		e.waitConnected()
		mon := e.monitorConn(b, "type='signal',sender='"+contract.BusName+"',member='PropertiesChanged'")
		b.Run(mode, func(b *testing.B) {
			var writes uint64
			for b.Loop() {
				gen++
				w0 := syscw(b)
				e.st.SetLocal(thousand(gen))
				suffix := fmt.Sprintf("-%d", gen)
				for n := 0; n < 1000; {
					select {
					case m := <-mon:
						if len(m.Body) > 1 {
							if l, ok := m.Body[1].(map[string]dbus.Variant)["IdLabel"]; ok {
								if s, _ := l.Value().(string); strings.HasSuffix(s, suffix) {
									n++
								}
							}
						}
					case <-time.After(20 * time.Second):
						b.Fatalf("%d of 1,000 signals within 20 s", n)
					}
				}
				writes += syscw(b) - w0
			}
			b.ReportMetric(float64(writes)/float64(b.N), "writes/op")
		})
		e.stop()
	}
}

// syscw is the write system calls this process has made.
func syscw(b *testing.B) uint64 {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skip("no /proc/self/io: ", err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "syscw: "); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			return n
		}
	}
	b.Skip("no syscw in /proc/self/io")
	return 0
}

// monitorConn is a bus monitor connection (as dbus-monitor is) for rule;
// the channel is closed when the test ends.
func (e *env) monitorConn(t testing.TB, rule string) chan *dbus.Message {
	t.Helper()
	mon, err := dbus.Connect(e.bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.BusObject().Call("org.freedesktop.DBus.Monitoring.BecomeMonitor", 0, []string{rule}, uint32(0)).Err; err != nil {
		mon.Close()
		t.Fatalf("BecomeMonitor: %v", err)
	}
	ch := make(chan *dbus.Message, 4096)
	mon.Eavesdrop(ch) // after its reply: it takes every message
	t.Cleanup(func() {
		// Detached first: godbus's Close closes the channel while its
		// reader may still send on it.
		mon.Eavesdrop(nil)
		mon.Close()
		close(ch)
	})
	return ch
}

// rawClient is a bus client that sends calls and reads their replies as
// bytes, without decoding them.
type rawClient struct {
	sock   *busSocket
	serial uint32
}

func dialRaw(t testing.TB, address string) *rawClient {
	t.Helper()
	sock, err := dialBus(context.Background(), address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	uid := fmt.Sprintf("%x", strconv.Itoa(os.Geteuid()))
	if _, err := sock.Write([]byte("\x00AUTH EXTERNAL " + uid + "\r\n")); err != nil {
		t.Fatal(err)
	}
	line, err := sock.r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "OK ") {
		t.Fatalf("auth: %q %v", line, err)
	}
	if _, err := sock.Write([]byte("BEGIN\r\n")); err != nil {
		t.Fatal(err)
	}
	rc := &rawClient{sock: sock}
	rc.call(t, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello")
	return rc
}

// call sends a call without arguments and returns the size of its reply,
// skipping signals.
func (rc *rawClient) call(t testing.TB, dest string, path dbus.ObjectPath, iface, member string) int {
	rc.serial++
	h := header{typ: dbus.TypeMethodCall, path: path, iface: iface, member: member, destination: dest}
	if err := rc.sock.send(appendMessage(nil, h, rc.serial, "", nil)); err != nil {
		t.Fatal(err)
	}
	var fixed [16]byte
	for {
		if _, err := io.ReadFull(rc.sock.r, fixed[:]); err != nil {
			t.Fatal(err)
		}
		body := binary.LittleEndian.Uint32(fixed[4:])
		fields := binary.LittleEndian.Uint32(fixed[12:])
		rest := int64((fields+7)&^7) + int64(body)
		if _, err := io.CopyN(io.Discard, rc.sock.r, rest); err != nil {
			t.Fatal(err)
		}
		switch dbus.Type(fixed[1]) {
		case dbus.TypeMethodReply:
			return 16 + int(rest)
		case dbus.TypeError:
			t.Fatalf("%s.%s failed", iface, member)
		}
	}
}
