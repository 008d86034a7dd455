package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/control"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/localsock"
	"github.com/diskd/diskd/pkg/store"
)

type backend struct{}

func (backend) Status() api.Status                { return api.Status{Version: "t", NodeName: "here"} }
func (backend) Refresh(context.Context) error     { return nil }
func (backend) Ping(context.Context) (int, error) { return 3, nil }
func (backend) Announce() error                   { return nil }
func (backend) Mount(_ context.Context, q string, rw bool, _ uint32) (api.MountResult, error) {
	return api.MountResult{Disk: q, Host: "here", Path: "/media/diskd/" + q, RW: rw}, nil
}
func (backend) Unmount(_ context.Context, q string, _ bool, _ uint32) (api.MountResult, error) {
	return api.MountResult{Disk: q, Host: "here", Path: "/media/diskd/" + q}, nil
}

func daemon(t *testing.T) string {
	t.Helper()
	st := store.New(store.Options{Local: disk.Node{ID: "00000000000000000000000000000001", Name: "here"}})
	st.SetLocal([]disk.Disk{
		{Name: "loop0", Device: "/dev/loop0", Label: "DATA", UUID: "1234-ABCD", Type: "vfat", Size: 64 << 20},
		{Name: "loop1", Device: "/dev/loop1", Label: "OLD", Type: "ext4", Mounts: []string{"/mnt/old"}},
	})
	st.SetLocal([]disk.Disk{{Name: "loop0", Device: "/dev/loop0", Label: "DATA", UUID: "1234-ABCD", Type: "vfat", Size: 64 << 20}})
	path := filepath.Join(t.TempDir(), "s")
	l, err := localsock.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		control.New(control.Config{Listener: l, Store: st, Backend: backend{}, Version: "t"}).Serve(ctx)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return path
}

func run(stdin string, args ...string) (string, string, int) {
	var o, e bytes.Buffer
	code := Main(args, strings.NewReader(stdin), &o, &e)
	return o.String(), e.String(), code
}

func TestCommands(t *testing.T) {
	sock := daemon(t)
	tests := []struct {
		name     string
		args     []string
		stdin    string
		code     int
		stdout   []string
		stderr   []string
		noStdout []string
	}{
		{"list table", []string{"list"}, "", 0,
			[]string{"HOST", "DEVICE", "LABEL", "UUID", "TYPE", "SIZE", "MOUNTPOINTS", "/dev/loop0", "DATA", "64M", "(gone since"}, nil, nil},
		{"where present", []string{"where", "DATA"}, "", 0, []string{"DATA is on here as /dev/loop0"}, nil, nil},
		{"where by uuid, any case", []string{"where", "1234-abcd"}, "", 0, []string{"is on here"}, nil, nil},
		{"where history", []string{"where", "OLD"}, "", 0, []string{"OLD was last seen on here as /dev/loop1", "not present"}, nil, nil},
		{"where unknown exits 1", []string{"where", "NOPE"}, "", 1, []string{"not known"}, nil, nil},
		{"history table", []string{"history", "DATA"}, "", 0,
			[]string{"DATA (uuid:1234-abcd), present", "HOST", "FIRST SEEN", "LAST SEEN", "here", "/dev/loop0", "now"}, nil, nil},
		{"history json", []string{"history", "--json", "OLD"}, "", 0, []string{`"sightings":[{"node_id":`, `"device":"/dev/loop1"`}, nil, nil},
		{"history unknown exits 1", []string{"history", "NOPE"}, "", 1, []string{"not known"}, nil, nil},
		{"usage: history without arg", []string{"history"}, "", 2, nil, []string{"requires at least 1 arg"}, nil},
		{"usage: missing arg", []string{"where"}, "", 2, nil, []string{"requires at least 1 arg"}, nil},
		{"usage: bad flag", []string{"list", "--frob"}, "", 2, nil, []string{"unknown flag"}, nil},
		{"usage: unknown command", []string{"frob"}, "", 2, nil, []string{"unknown"}, nil},
		{"ping", []string{"ping"}, "", 0, []string{"3 peers answered"}, nil, nil},
		{"piped shell", nil, "list\nstatus\n\nwhere DATA\n", 0, []string{"HOST", "diskd t on here", "DATA is on here"}, nil, nil},
		{"piped shell, quit stops", nil, "localhost\nquit\nlist\n", 0, []string{"here (node"}, nil, []string{"HOST"}},
		{"piped shell counts failures", nil, "where NOPE\nlist\n", 1, []string{"HOST"}, []string{"1 commands failed"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := run(tt.stdin, append([]string{"--socket", sock}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out, errOut)
			}
			for _, w := range tt.stdout {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.noStdout {
				if strings.Contains(out, w) {
					t.Errorf("stdout has %q:\n%s", w, out)
				}
			}
			for _, w := range tt.stderr {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
}

func TestListJSON(t *testing.T) {
	sock := daemon(t)
	out, errOut, code := run("", "--socket", sock, "list", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("not a JSON array: %v\n%s", err, out)
	}
	if len(rows) != 2 {
		t.Fatalf("%d rows", len(rows))
	}
	for _, key := range []string{"host", "node_id", "device", "uuid", "label", "type", "size", "mountpoints", "present", "last_seen"} {
		if _, ok := rows[0][key]; !ok {
			t.Errorf("row lacks %q: %v", key, rows[0])
		}
	}
	if _, ok := rows[0]["mountpoints"].([]any); !ok {
		t.Errorf("mountpoints is not an array: %#v", rows[0]["mountpoints"])
	}
	if rows[0]["size"].(float64) != 64<<20 {
		t.Errorf("size = %v, want bytes", rows[0]["size"])
	}
	if _, err := time.Parse(time.RFC3339, rows[0]["last_seen"].(string)); err != nil {
		t.Errorf("last_seen not RFC 3339: %v", err)
	}
	if rows[1]["present"] != false || rows[1]["label"] != "OLD" {
		t.Errorf("history row = %v", rows[1])
	}
}

func TestNoDaemonIsOneClearLine(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "absent.sock")
	out, errOut, code := run("", "--socket", sock, "list")
	if code != 1 || out != "" {
		t.Errorf("exit %d, stdout %q", code, out)
	}
	if strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, sock) {
		t.Errorf("stderr = %q, want one line naming %s", errOut, sock)
	}
}

// errConn answers every where with an error quoting hostile bytes, as a
// daemon's error may quote what a peer or a medium said.
type errConn struct{ Conn }

func (errConn) Where(context.Context, string) ([]disk.Disk, error) {
	return nil, errors.New("peer \x1b]0;owned\x07 said \u009b2J\xff")
}
func (errConn) Close() error { return nil }

func TestErrorMessagesEscaped(t *testing.T) {
	var o, e bytes.Buffer
	env := &env{stdin: strings.NewReader(""), stdout: &o, stderr: &e, conn: errConn{}}
	if code := env.exec([]string{"where", "x"}, true); code != ExitError {
		t.Fatalf("exit %d", code)
	}
	want := `diskctl: peer \x1b]0;owned\x07 said \u009b2J\xff` + "\n"
	if e.String() != want {
		t.Errorf("stderr = %q, want %q", e.String(), want)
	}
}
