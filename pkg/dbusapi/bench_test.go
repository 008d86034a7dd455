package dbusapi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/disk"
)

// BenchmarkGetManagedObjects10k: a client's GetManagedObjects through a
// real dbus-daemon with 10,000 disks on the network (10 peers of 1,000),
// from the call to the decoded reply.
func BenchmarkGetManagedObjects10k(b *testing.B) {
	e := startEnv(b, Config{})
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
	c := e.client()
	obj := c.Object(contract.BusName, contract.RootPath)
	var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	waitFor(b, "10,000 disks on the bus", func() bool {
		objs = nil
		err := obj.Call(contract.ObjectManagerInterface+".GetManagedObjects", 0).Store(&objs)
		return err == nil && len(objs) == 10_000+11+1
	})
	b.Run("bus", func(b *testing.B) {
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
	// diskd's own share: reading the store and building the reply value,
	// before godbus encodes it.
	b.Run("build", func(b *testing.B) {
		srv := &server{svc: e.svc, om: newObjectManager(contract.RootPath, nil)}
		srv.om.load(e.svc.snapshot())
		for b.Loop() {
			if _, err := srv.getManagedObjects(nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	// godbus's share on the daemon side: encoding the reply (done twice
	// per send: once to count file descriptors, once to write).
	b.Run("encode", func(b *testing.B) {
		srv := &server{svc: e.svc, om: newObjectManager(contract.RootPath, nil)}
		srv.om.load(e.svc.snapshot())
		body, _ := srv.getManagedObjects(nil)
		msg := &dbus.Message{Type: dbus.TypeMethodReply, Headers: map[dbus.HeaderField]dbus.Variant{
			dbus.FieldReplySerial: dbus.MakeVariant(uint32(1)),
			dbus.FieldSignature:   dbus.MakeVariant(dbus.SignatureOf(body...)),
		}, Body: body}
		var size int
		for b.Loop() {
			var buf bytes.Buffer
			if err := msg.EncodeTo(&buf, binary.LittleEndian); err != nil {
				b.Fatal(err)
			}
			size = buf.Len()
		}
		b.ReportMetric(float64(size), "reply-bytes")
	})
}
