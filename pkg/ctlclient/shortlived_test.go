package ctlclient

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/disk"
)

// listen is a Unix socket listening in a temporary directory, closed
// when the test ends.
func listen(t *testing.T) (net.Listener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

// scriptedDaemon accepts sessions on a real Unix socket and plays the same
// script on each: it writes greeting (unless empty), then for each request line
// the next reply; hold keeps the session open and silent afterwards.
func scriptedDaemon(t *testing.T, greeting string, hold bool, replies ...string) string {
	t.Helper()
	l, path := listen(t)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, greeting)
				r := bufio.NewReader(c)
				for _, reply := range replies {
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					io.WriteString(c, reply)
				}
				if hold {
					io.Copy(io.Discard, r)
				}
			}()
		}
	}()
	return path
}

// TestShortLivedAnswersAsDial: a where through DialShortLived (blocking
// socket, request sent before the greeting is read) gives what one
// through Dial gives, answers and errors alike, the greeting's included.
func TestShortLivedAnswersAsDial(t *testing.T) {
	d := disk.Disk{Node: "n1", Host: "h", Name: "sdb1", Device: "/dev/sdb1", Label: "DATA", Present: true, Mounts: []string{}}
	ok := `{"ok":true,"result":` + string(disk.AppendJSONArray(nil, []disk.Disk{d})) + "}\n"
	greeting := "diskd test on here; type \"help\" for commands\n"
	tests := []struct {
		name, greeting string
		hold           bool
		replies        []string
		want           string // the error, PATH for the socket; "" for the disk
	}{
		{"answer", greeting, false, []string{ok}, ""},
		{"error reply", greeting, false, []string{`{"ok":false,"error":"no such thing"}` + "\n"}, "no such thing"},
		{"not diskd", "SSH-2.0-OpenSSH_9.2\n", false, nil, `PATH does not speak the diskd protocol (greeting "SSH-2.0-OpenSSH_9.2\n": <nil>)`},
		{"refused", "error: too many sessions of uid 1000\n", false, nil, `PATH does not speak the diskd protocol (greeting "error: too many sessions of uid 1000\n": <nil>)`},
		{"gone after the request", greeting, false, []string{""}, "where: reading reply: EOF"},
		{"silent", "", true, nil, `PATH does not speak the diskd protocol (greeting "": read unix @->PATH: i/o timeout)`},
		{"no reply", greeting, true, nil, "where: reading reply: read unix @->PATH: i/o timeout"},
	}
	for _, tt := range tests {
		path := scriptedDaemon(t, tt.greeting, tt.hold, tt.replies...)
		var got []string
		for _, dial := range []func(context.Context, string) (*Client, error){Dial, DialShortLived} {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			c, err := dial(ctx, path)
			var ds []disk.Disk
			if err == nil {
				ds, err = c.Where(ctx, "DATA")
				c.Close()
			}
			cancel()
			switch {
			case err != nil:
				got = append(got, strings.ReplaceAll(err.Error(), path, "PATH"))
			case tt.want != "" || len(ds) != 1 || !reflect.DeepEqual(ds[0], d):
				got = append(got, fmt.Sprintf("disks %+v", ds))
			default:
				got = append(got, "")
			}
		}
		if got[0] != tt.want || got[1] != tt.want {
			t.Errorf("%s:\n Dial:          %q\n DialShortLived: %q\n want           %q", tt.name, got[0], got[1], tt.want)
		}
	}
}

// TestListLongReply: a list longer than the client's blocks, arriving in
// pieces that split it anywhere (in the frame, in a block, with the next
// reply in the same piece), decodes as the whole would, and the next
// reply reads whole after it.
func TestListLongReply(t *testing.T) {
	var ds []disk.Disk
	for i := range 20_000 { // ~5 MB: five blocks
		ds = append(ds, disk.Disk{Node: "n1", Host: "h", Name: fmt.Sprintf("sd%d", i), Device: fmt.Sprintf("/dev/sd%d", i),
			Label: fmt.Sprintf("L \"%d\" é", i), Present: i%2 == 0, Mounts: []string{}, Size: uint64(i)})
	}
	arr := disk.AppendJSONArray(nil, ds)
	if len(arr) < 4*copySize {
		t.Fatalf("the list is %d bytes, want several blocks", len(arr))
	}
	reply := string(okPrefix) + string(arr) + "}\n"
	next := `{"ok":true,"result":[]}` + "\n"
	for _, cut := range [][]int{{5}, {len(okPrefix) + 3, copySize, 2*copySize + 7}, {4096, 4097}, {len(reply) - 2}, {len(reply) - 1}} {
		var pieces []string
		at := 0
		for _, c := range cut {
			pieces = append(pieces, reply[at:c])
			at = c
		}
		pieces = append(pieces, reply[at:]+next[:7], next[7:])
		c, err := Dial(context.Background(), fakeDaemon(t, false, pieces, nil))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		got, err := c.List(ctx, api.ListFilter{})
		cancel()
		if err != nil || !reflect.DeepEqual(got, ds) {
			t.Fatalf("cut at %v: %d disks, %v", cut, len(got), err)
		}
		// The next request's reply is what followed.
		c.conn.Write([]byte("next\n"))
		c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if line, err := c.readLine(); err != nil || string(line) != next {
			t.Errorf("cut at %v: next reply %q, %v", cut, line, err)
		}
		c.Close()
	}
}
