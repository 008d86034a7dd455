package logging

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/diskd/diskd/pkg/testutil"
)

func TestFieldName(t *testing.T) {
	tests := []struct{ key, want string }{
		{"component", "COMPONENT"},
		{"node", "NODE"},
		{"device", "DEVICE"},
		{"delay_ms", "DELAY_MS"},
		{"mount.point", "MOUNT_POINT"},
		{"Already_UP", "ALREADY_UP"},
		{"_trusted", "TRUSTED"},
		{"__x", "X"},
		{"9lives", "F9LIVES"},
		{"", "F"},
		{"é", "F"},
		{"a-b c", "A_B_C"},
	}
	for _, tt := range tests {
		if got := fieldName(tt.key); got != tt.want {
			t.Errorf("fieldName(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}

func TestPriority(t *testing.T) {
	tests := []struct {
		level slog.Level
		want  journal.Priority
	}{
		{slog.LevelDebug - 4, journal.PriDebug},
		{slog.LevelDebug, journal.PriDebug},
		{slog.LevelInfo - 1, journal.PriDebug},
		{slog.LevelInfo, journal.PriInfo},
		{slog.LevelInfo + 2, journal.PriInfo},
		{slog.LevelWarn, journal.PriWarning},
		{slog.LevelError, journal.PriErr},
		{slog.LevelError + 4, journal.PriCrit},
	}
	for _, tt := range tests {
		if got := priority(tt.level); got != tt.want {
			t.Errorf("priority(%v) = %d, want %d", tt.level, got, tt.want)
		}
	}
}

type sent struct {
	msg  string
	pri  journal.Priority
	vars map[string]string
}

// recorder is a fake journal.Send.
type recorder struct {
	got []sent
	err error
}

func (r *recorder) send(msg string, pri journal.Priority, vars map[string]string) error {
	r.got = append(r.got, sent{msg, pri, vars})
	return r.err
}

func TestJournalHandlerFields(t *testing.T) {
	at := time.Date(2025, 11, 25, 14, 34, 0, 5, time.UTC)
	tests := []struct {
		name   string
		log    func(*slog.Logger)
		msg    string
		pri    journal.Priority
		want   map[string]string
		absent []string
	}{
		{
			name: "attributes become fields",
			log: func(l *slog.Logger) {
				l.With("component", "scanner").Info("probed", "device", "/dev/loop3", "node", "n1", "size", 1<<20)
			},
			msg:  "probed component=scanner device=/dev/loop3 node=n1 size=1048576",
			pri:  journal.PriInfo,
			want: map[string]string{"COMPONENT": "scanner", "DEVICE": "/dev/loop3", "NODE": "n1", "SIZE": "1048576"},
		},
		{
			name: "groups prefix names",
			log: func(l *slog.Logger) {
				l.With("component", "peer").WithGroup("from").Warn("late", "addr", "10.99.0.2", slog.Group("ids", "node", "n2"))
			},
			msg:  "late component=peer from.addr=10.99.0.2 from.ids.node=n2",
			pri:  journal.PriWarning,
			want: map[string]string{"COMPONENT": "peer", "FROM_ADDR": "10.99.0.2", "FROM_IDS_NODE": "n2"},
		},
		{
			name: "errors, times, durations, quoting",
			log: func(l *slog.Logger) {
				l.Error("blkid failed", "err", errors.New("exit status 4"), "at", at, "took", 1500*time.Millisecond, "label", "my disk")
			},
			msg:  `blkid failed err="exit status 4" at=2025-11-25T14:34:00.000000005Z took=1.5s label="my disk"`,
			pri:  journal.PriErr,
			want: map[string]string{"ERR": "exit status 4", "AT": "2025-11-25T14:34:00.000000005Z", "TOOK": "1.5s", "LABEL": "my disk"},
		},
		{
			name:   "reserved names are not overwritten",
			log:    func(l *slog.Logger) { l.Info("real", "message", "fake", "priority", 0) },
			msg:    "real message=fake priority=0",
			pri:    journal.PriInfo,
			want:   map[string]string{"ATTR_MESSAGE": "fake", "ATTR_PRIORITY": "0", "SYSLOG_IDENTIFIER": identifier()},
			absent: []string{"MESSAGE", "PRIORITY"},
		},
		{
			name: "source location",
			log:  func(l *slog.Logger) { l.Info("here") },
			msg:  "here",
			pri:  journal.PriInfo,
			want: map[string]string{"CODE_FUNC": "github.com/diskd/diskd/pkg/logging.TestJournalHandlerFields.func5"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			tt.log(slog.New(newJournalHandler(rec.send, slog.LevelDebug, &bytes.Buffer{})))
			if len(rec.got) != 1 {
				t.Fatalf("sent %d entries, want 1", len(rec.got))
			}
			e := rec.got[0]
			if e.msg != tt.msg {
				t.Errorf("MESSAGE = %q\nwant      %q", e.msg, tt.msg)
			}
			if e.pri != tt.pri {
				t.Errorf("PRIORITY = %d, want %d", e.pri, tt.pri)
			}
			for k, v := range tt.want {
				if e.vars[k] != v {
					t.Errorf("%s = %q, want %q (all: %v)", k, e.vars[k], v, e.vars)
				}
			}
			for _, k := range tt.absent {
				if _, ok := e.vars[k]; ok {
					t.Errorf("%s set: %v", k, e.vars)
				}
			}
		})
	}
}

func TestJournalHandlerLevelAndFallback(t *testing.T) {
	rec := &recorder{err: errors.New("journald gone")}
	var stderr bytes.Buffer
	l := slog.New(newJournalHandler(rec.send, slog.LevelInfo, &stderr)).With("component", "store")
	l.Debug("dropped")
	l.Info("saved", "disks", 3)
	if len(rec.got) != 1 {
		t.Fatalf("sent %d entries, want 1 (debug must be dropped)", len(rec.got))
	}
	if got := stderr.String(); !strings.Contains(got, "msg=saved component=store disks=3") {
		t.Errorf("failed send not written as text to the fallback: %q", got)
	}
}

// statID returns a file's "dev:ino" as JOURNAL_STREAM spells it.
func statID(t *testing.T, f *os.File) string {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func TestIsJournalStream(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	other, err := os.Create(filepath.Join(dir, "other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	tests := []struct {
		name string
		env  string
		w    any
		want bool
	}{
		{"matches", statID(t, f), f, true},
		{"unset", "", f, false},
		{"another file", statID(t, other), f, false},
		{"malformed", "garbage", f, false},
		{"not a file", statID(t, f), &bytes.Buffer{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("JOURNAL_STREAM", tt.env)
			w := tt.w.(interface{ Write([]byte) (int, error) })
			if got := isJournalStream(w); got != tt.want {
				t.Errorf("isJournalStream = %v, want %v", got, tt.want)
			}
		})
	}
}

// parseNative decodes one datagram of journald's native protocol.
func parseNative(t *testing.T, b []byte) map[string]string {
	t.Helper()
	m := map[string]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			t.Fatalf("unterminated field in %q", b)
		}
		line := b[:nl]
		b = b[nl+1:]
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			m[string(k)] = string(v)
			continue
		}
		// KEY\n<uint64 LE length><data>\n: values with newlines.
		n := binary.LittleEndian.Uint64(b[:8])
		m[string(line)] = string(b[8 : 8+n])
		b = b[8+n+1:]
	}
	return m
}

// TestNewThroughFakeJournald runs logdemo, built with go-systemd's journal
// socket pointed at a unixgram socket this test listens on, once with
// stderr as the journal stream and once without.
func TestNewThroughFakeJournald(t *testing.T) {
	testutil.RequiresTool(t, "go")
	dir := t.TempDir()
	sock := filepath.Join(dir, "journal.sock")
	bin := filepath.Join(dir, "logdemo")
	build := exec.Command("go", "build", "-o", bin,
		"-ldflags=-X github.com/coreos/go-systemd/v22/journal.journalSocket="+sock, "./testdata/logdemo")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build logdemo: %v\n%s", err, out)
	}
	journald, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer journald.Close()

	// demo runs logdemo with stderr on a fresh file and JOURNAL_STREAM set
	// to that file (match) or to another one; it returns the datagrams that
	// reached the fake journald and what was written to stderr. logdemo
	// sends synchronously, so after it exits everything is queued.
	demo := func(match bool) ([]map[string]string, string) {
		stderr, err := os.CreateTemp(dir, "stderr")
		if err != nil {
			t.Fatal(err)
		}
		defer stderr.Close()
		stream := statID(t, stderr)
		if !match {
			stream = statID(t, journaldFile(t, journald))
		}
		cmd := exec.Command(bin)
		cmd.Stderr = stderr
		cmd.Env = append(os.Environ(), "JOURNAL_STREAM="+stream)
		if err := cmd.Run(); err != nil {
			t.Fatalf("logdemo: %v", err)
		}
		var got []map[string]string
		for _, d := range drain(t, journald) {
			got = append(got, parseNative(t, d))
		}
		text, err := os.ReadFile(stderr.Name())
		if err != nil {
			t.Fatal(err)
		}
		return got, string(text)
	}

	t.Run("journal stream", func(t *testing.T) {
		got, text := demo(true)
		if text != "" {
			t.Errorf("wrote to stderr besides the journal: %q", text)
		}
		want := []map[string]string{
			{"MESSAGE": "probed component=scanner device=/dev/loop3 node=n1 size=1048576", "PRIORITY": "6",
				"COMPONENT": "scanner", "DEVICE": "/dev/loop3", "NODE": "n1", "SIZE": "1048576", "SYSLOG_IDENTIFIER": "logdemo"},
			{"PRIORITY": "4", "COMPONENT": "scanner", "PEER_ADDR": "10.99.0.2", "PEER_DELAY_MS": "1500"},
			{"PRIORITY": "3", "ERR": "exit status 4", "STDERR": "line one\nline two", "CODE_FUNC": "main.main"},
		}
		if len(got) != len(want) {
			t.Fatalf("journald got %d entries, want %d: %v", len(got), len(want), got)
		}
		for i, w := range want {
			for k, v := range w {
				if got[i][k] != v {
					t.Errorf("entry %d: %s = %q, want %q\n(all: %v)", i, k, got[i][k], v, got[i])
				}
			}
		}
	})
	t.Run("not the journal stream", func(t *testing.T) {
		got, text := demo(false)
		if len(got) != 0 {
			t.Errorf("sent %d entries to journald although stderr is not its stream: %v", len(got), got)
		}
		for _, want := range []string{
			"level=INFO msg=probed component=scanner device=/dev/loop3",
			`level=WARN msg="late announce" component=scanner peer.addr=10.99.0.2`,
			`level=ERROR msg="blkid failed" component=scanner err="exit status 4"`,
		} {
			if !strings.Contains(text, want) {
				t.Errorf("stderr lacks %q:\n%s", want, text)
			}
		}
		if strings.Contains(text, "dropped below") {
			t.Errorf("debug record written at info level:\n%s", text)
		}
	})
}

// drain returns the datagrams queued on c without waiting for more.
func drain(t *testing.T, c *net.UnixConn) [][]byte {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for {
		buf := make([]byte, 1<<16)
		var n int
		var rerr error
		if err := rc.Control(func(fd uintptr) {
			n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
		}); err != nil {
			t.Fatal(err)
		}
		if rerr == syscall.EAGAIN {
			return out
		}
		if rerr != nil {
			t.Fatalf("read fake journald: %v", rerr)
		}
		out = append(out, buf[:n])
	}
}

// journaldFile returns some open file other than the demo's stderr, for a
// JOURNAL_STREAM that does not match.
func journaldFile(t *testing.T, c *net.UnixConn) *os.File {
	t.Helper()
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
