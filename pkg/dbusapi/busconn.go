package dbusapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"
)

// busSocket is the connection to the bus when diskd dials it itself (a
// unix: address, which is what system and session buses use): godbus
// reads and writes its messages through it, and the adapter writes the
// messages it encodes itself (replies to GetManagedObjects, batches of
// signals) on the same socket. Every write is one whole message or a run
// of whole messages, under one lock, so the two never interleave.
type busSocket struct {
	c net.Conn
	r *bufio.Reader

	wmu    sync.Mutex
	writes atomic.Uint64 // write calls, for the benchmarks
	serial atomic.Uint32 // shared with godbus (see GetSerial)
}

func (s *busSocket) Read(p []byte) (int, error) { return s.r.Read(p) }

// Write is godbus's: it writes each message with one call.
func (s *busSocket) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.writes.Add(1)
	return s.c.Write(p)
}

// send writes messages the adapter encoded (the pieces of one or more
// whole messages) as one write.
func (s *busSocket) send(pieces ...[]byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.writes.Add(1)
	if len(pieces) == 1 {
		_, err := s.c.Write(pieces[0])
		return err
	}
	bufs := net.Buffers(pieces)
	_, err := bufs.WriteTo(s.c)
	return err
}

func (s *busSocket) Close() error { return s.c.Close() }

// GetSerial and RetireSerial make busSocket godbus's serial generator, so
// messages from both writers have distinct serials.
func (s *busSocket) GetSerial() uint32 {
	for {
		if n := s.serial.Add(1); n != 0 {
			return n
		}
	}
}

func (s *busSocket) RetireSerial(uint32) {}

// errNotUnix says an address has no unix: entry diskd dials itself; godbus
// dials it instead, and everything is encoded by godbus.
var errNotUnix = errors.New("no unix: address")

// dialBus connects to the first unix: entry of a D-Bus address list
// ("unix:path=/run/dbus/system_bus_socket", "unix:abstract=...").
func dialBus(ctx context.Context, address string) (*busSocket, error) {
	var tried error = errNotUnix
	for _, a := range strings.Split(address, ";") {
		kind, params, ok := strings.Cut(a, ":")
		if !ok || kind != "unix" {
			continue
		}
		var path string
		for _, kv := range strings.Split(params, ",") {
			k, v, _ := strings.Cut(kv, "=")
			uv, err := dbus.UnescapeBusAddressValue(v)
			if err != nil {
				return nil, fmt.Errorf("bad address %q: %w", a, err)
			}
			switch k {
			case "path":
				path = uv
			case "abstract":
				path = "@" + uv
			}
		}
		if path == "" {
			continue // tmpdir= and dir= are for servers
		}
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			tried = err
			continue
		}
		return &busSocket{c: c, r: bufio.NewReaderSize(c, 64<<10)}, nil
	}
	return nil, tried
}

// connect dials address and returns the connection, authenticated and
// registered (Hello), with the socket diskd writes its own messages on, or
// a nil socket when godbus had to dial (an address without unix: entry,
// or godbusOnly, which tests use to compare the two).
func connect(ctx context.Context, address string, godbusOnly bool, opts ...dbus.ConnOption) (*dbus.Conn, *busSocket, error) {
	sock, err := dialBus(ctx, address)
	if godbusOnly && err == nil {
		sock.Close()
		err = errNotUnix
	}
	if errors.Is(err, errNotUnix) {
		conn, err := dbus.Connect(address, opts...)
		return conn, nil, err
	}
	if err != nil {
		return nil, nil, err
	}
	conn, err := dbus.NewConn(sock, append([]dbus.ConnOption{dbus.WithSerialGenerator(sock)}, opts...)...)
	if err != nil {
		sock.Close()
		return nil, nil, err
	}
	if err := conn.Auth(nil); err != nil {
		conn.Close()
		return nil, nil, err
	}
	if err := conn.Hello(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, sock, nil
}

// signalQueue encodes signals as the object manager emits them and sends
// a batch's worth with one write (see objectManager.flush). Only the
// publishing goroutine uses it.
type signalQueue struct {
	sock *busSocket
	buf  []byte
}

// queueLimit is how many bytes of signals are held before they are sent
// within a batch (a resynchronisation of 100,000 objects need not be held
// whole).
const queueLimit = 4 << 20

func (q *signalQueue) emit(path dbus.ObjectPath, name string, args ...any) error {
	i := strings.LastIndexByte(name, '.')
	if i < 0 || !path.IsValid() {
		return fmt.Errorf("bad signal %s on %s", name, path)
	}
	sig, body, err := encodeArgs(args...)
	if err != nil {
		return fmt.Errorf("signal %s: %w", name, err)
	}
	h := header{typ: dbus.TypeSignal, path: path, iface: name[:i], member: name[i+1:]}
	q.buf = appendMessage(q.buf, h, q.sock.GetSerial(), sig, body)
	if len(q.buf) >= queueLimit {
		return q.flush()
	}
	return nil
}

func (q *signalQueue) flush() error {
	if len(q.buf) == 0 {
		return nil
	}
	err := q.sock.send(q.buf)
	if cap(q.buf) > queueLimit*2 {
		q.buf = nil
	} else {
		q.buf = q.buf[:0]
	}
	return err
}
