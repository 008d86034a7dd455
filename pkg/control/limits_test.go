package control

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/testutil"
)

// sessions is how many sessions the server counts now.
func (s *Server) sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// TestAdmit: the session bounds, in the order a flood meets them. Root
// always has room up to the total; each other uid is bounded on its own.
func TestAdmit(t *testing.T) {
	s := New(Config{MaxSessions: 10, RootReserve: 3, MaxSessionsPerUser: 4})
	for i, tc := range []struct {
		uid  uint32
		want string // "" admitted, else the refusal
	}{
		{1000, ""}, {1000, ""}, {1000, ""}, {1000, ""},
		{1000, "too many sessions for uid 1000 (4 at once); close some and try again"},
		{1001, ""}, {1001, ""}, {1001, ""}, // 7: what non-root users may hold
		{1002, "too many sessions (7; the other 3 are kept for root); try again later"},
		{0, ""}, {0, ""}, {0, ""},
		{0, "too many sessions (10); try again later"},
	} {
		_, got := s.admit(tc.uid)
		if got != tc.want {
			t.Errorf("%d: admit(uid %d) = %q, want %q", i, tc.uid, got, tc.want)
		}
	}
	s.leave(1000)
	if _, got := s.admit(1002); got != "too many sessions (7; the other 3 are kept for root); try again later" {
		t.Errorf("uid 1002 after root took the reserve: %q", got)
	}
	// Root's sessions count in the total: three leaving make room.
	s.leave(0)
	s.leave(0)
	s.leave(1001)
	if _, got := s.admit(1002); got != "" {
		t.Errorf("uid 1002 after three left: %q", got)
	}
	if n := len(s.users); n != 4 {
		t.Errorf("%d uids tracked, want 4 (0, 1000, 1001, 1002)", n)
	}
}

// TestSlowReaderDisconnected: a client that sends `list` and never reads
// is disconnected once the write deadline passes, its session is freed,
// the disconnection is logged once, and other clients are served
// throughout.
func TestSlowReaderDisconnected(t *testing.T) {
	st := store.New(store.Options{Local: disk.Node{ID: "00000000000000000000000000000001", Name: "here"}})
	testutil.FillPeers(st, 8000) // a list reply of a few MB: far more than the socket buffers hold
	var logs syncBuffer
	srv, path := serveWith(t, st, Config{WriteTimeout: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	stuck := stuckClients(t, path, "list\n", 3)
	good := dial(t, path)
	if _, err := good.Status(t.Context()); err != nil {
		t.Errorf("a reading client was not served: %v", err)
	}
	good.Close()
	testutil.Eventually(t, 20*time.Second, "the stuck sessions to be closed", func() bool { return srv.sessions() == 0 })
	// The client finds the end of what was sent, not a hang.
	for _, c := range stuck {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var buf [64 << 10]byte
		for {
			if _, err := c.Read(buf[:]); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Error("the stuck client's connection is still open")
				}
				break
			}
		}
	}
	if n := strings.Count(logs.String(), "closing session: the client did not read its reply"); n != 1 {
		t.Errorf("%d log lines for 3 slow readers within 10 s, want 1:\n%s", n, logs.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestListSendBufferBounded: a list reply raises its session's send
// buffer (sendbuf.go), so a list of some MB fits in the kernel whole and
// the daemon's write returns at once. A client that asks for it and never
// reads is still a slow reader: disconnected at the write deadline, not
// left holding megabytes of kernel memory until it idles out.
func TestListSendBufferBounded(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/core/wmem_max")
	if err != nil {
		t.Skip(err)
	}
	if max, _ := strconv.Atoi(strings.TrimSpace(string(b))); max < 1<<20 {
		t.Skipf("net.core.wmem_max is %d: a list of a few MB does not fit the raised send buffer, and TestSlowReaderDisconnected covers the reply that does not", max)
	}
	st := store.New(store.Options{Local: disk.Node{ID: "00000000000000000000000000000001", Name: "here"}})
	testutil.FillPeers(st, 3000) // a JSON list of ~1.2 MB: more than the default buffer, less than the raised one
	srv, path := serveWith(t, st, Config{WriteTimeout: 300 * time.Millisecond, IdleTimeout: time.Hour})
	stuck := stuckClients(t, path, `{"cmd":"list"}`+"\n", 3)
	testutil.Eventually(t, 20*time.Second, "the sessions that do not read their list to be closed", func() bool { return srv.sessions() == 0 })
	// Each reply was whole in the kernel (the buffer was raised), then
	// the session ended.
	for _, c := range stuck {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Error("the connection is still open")
		}
		if !bytes.HasSuffix(got, []byte("]}\n")) {
			t.Errorf("read %d bytes ending %q: the reply did not fit the raised send buffer", len(got), got[max(0, len(got)-8):])
		}
	}
}

// stuckClients opens n sessions that send request and read no reply.
func stuckClients(t *testing.T, path, request string, n int) []net.Conn {
	t.Helper()
	var stuck []net.Conn
	for range n {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		bufio.NewReader(c).ReadString('\n')
		if _, err := c.Write([]byte(request)); err != nil {
			t.Fatal(err)
		}
		stuck = append(stuck, c)
	}
	return stuck
}
