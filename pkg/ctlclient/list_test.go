package ctlclient

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/diskd/diskd/pkg/api"
)

// listReplies are list replies after their okPrefix: well formed ones
// with "}" and "}\n" where a reader's split could mislead it, malformed
// ones, replies cut short, and a reply followed by the next.
var listReplies = []string{
	`[{"a":"}"},{"b":1}]}` + "\n",
	`[]}` + "\n",
	`}` + "\n",
	`[1]}}` + "\n",
	`}}` + "\n",
	`[1]}` + "\n" + `{"ok":true,"result":"next"}` + "\n",
	"}\n}\n",
	`[1]` + "\n",
	"\n",
	`[1]` + "\n" + `[2]}` + "\n",
	`[1]}`,
	`[1]`,
	`}`,
	``,
}

// wantList is what the reply s must give: diskctl's output, the error
// ("" for none), and what remains for the next reply. It is the frame's
// definition, written as plainly as possible: the reply ends at its first
// newline, and "}\n" closes a successful one.
func wantList(s string) (out, err, rest string) {
	i := strings.IndexByte(s, '\n')
	if i < 0 {
		return "", "list: reading reply: EOF", ""
	}
	if i == 0 || s[i-1] != '}' {
		return "", "list: malformed reply", s[i+1:]
	}
	return s[:i-1], "", s[i+1:]
}

// chunkReader returns its bytes sizes[0], sizes[1], ... at a time (the
// last size repeating), and io.EOF with the last bytes when eofWithData.
type chunkReader struct {
	b           []byte
	sizes       []int
	eofWithData bool
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	k := r.sizes[0]
	if len(r.sizes) > 1 {
		r.sizes = r.sizes[1:]
	}
	n := copy(p, r.b[:min(k, len(r.b))])
	r.b = r.b[n:]
	if len(r.b) == 0 && r.eofWithData {
		return n, io.EOF
	}
	return n, nil
}

// TestCopyResultSplits reads each reply k bytes at a time for every k,
// and in two reads split at every position, into buffers from the
// smallest copyResult takes up: every split of the frame's closing "}\n"
// across reads and across buffers.
func TestCopyResultSplits(t *testing.T) {
	for _, s := range listReplies {
		wantOut, wantErr, wantRest := wantList(s)
		var cases []*chunkReader
		for k := 1; k <= max(len(s), 1); k++ {
			cases = append(cases, &chunkReader{b: []byte(s), sizes: []int{k}}, &chunkReader{b: []byte(s), sizes: []int{k}, eofWithData: true})
		}
		for p := 0; p <= len(s); p++ {
			cases = append(cases, &chunkReader{b: []byte(s), sizes: []int{p, len(s)}})
		}
		for _, r := range cases {
			sizes := fmt.Sprint(r.sizes)
			for _, bufSize := range []int{2, 3, 5, 64} {
				r := *r
				var out bytes.Buffer
				rest, err := copyResult(&r, &out, make([]byte, bufSize))
				name := fmt.Sprintf("%q read %s into %d bytes", s, sizes, bufSize)
				checkList(t, name, out.String(), err, string(rest)+string(r.b), wantOut, wantErr, wantRest)
			}
		}
	}
}

func checkList(t *testing.T, name, out string, err error, rest, wantOut, wantErr, wantRest string) {
	t.Helper()
	gotErr := ""
	if err != nil {
		gotErr = err.Error()
	}
	if gotErr != wantErr {
		t.Errorf("%s: error %q, want %q", name, gotErr, wantErr)
	}
	if wantErr == "" && out != wantOut {
		t.Errorf("%s: wrote %q, want %q", name, out, wantOut)
	}
	if rest != wantRest {
		t.Errorf("%s: left %q for the next reply, want %q", name, rest, wantRest)
	}
}

// TestCopyResultWriteError: w's error is returned as it is.
func TestCopyResultWriteError(t *testing.T) {
	boom := errors.New("boom")
	for _, s := range []string{"[1,2,3]}\n", "[1,2,3]"} {
		_, err := copyResult(strings.NewReader(s), errWriter{boom}, make([]byte, 4))
		var we writeError
		if !errors.As(err, &we) || we.error != boom {
			t.Errorf("%q: error %v, want the writer's", s, err)
		}
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

// fakeDaemon accepts one session on a real Unix socket, greets it, and
// answers each request line with the next of replies, written in pieces.
// Before the next piece it waits until the client has taken all that was
// sent (SIOCOUTQ is 0), so each piece is one read of its own: the splits
// are the client's, not left to timing.
func fakeDaemon(t *testing.T, hangUp bool, replies ...[]string) string {
	t.Helper()
	l, path := listen(t)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(c, "%stest on here\n", api.GreetingPrefix)
		r := bufio.NewReader(c)
		for _, pieces := range replies {
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
			for i, p := range pieces {
				if _, err := io.WriteString(c, p); err != nil {
					return
				}
				// A piece holding a newline may end the client's read
				// there, leaving the rest unread: no waiting after it.
				if i < len(pieces)-1 && !strings.Contains(strings.Join(pieces[:i+1], ""), "\n") {
					waitDrained(t, c)
				}
			}
		}
		if hangUp {
			c.(*net.UnixConn).CloseWrite()
		}
		// Hold the session open until the client leaves, so a reply cut
		// short is an EOF only when the test says so.
		io.Copy(io.Discard, r)
	}()
	return path
}

func waitDrained(t *testing.T, c net.Conn) {
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		t.Error(err)
		return
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Microsecond) {
		queued := -1
		raw.Control(func(fd uintptr) { queued, _ = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
		if queued == 0 {
			return
		}
	}
	t.Error("the client did not read what was sent")
}

// pipeOutput is an os.Pipe whose reading end is gathered into a string.
func pipeOutput(t *testing.T) (w *os.File, wait func() string) {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(pr)
		pr.Close()
		got <- string(b)
	}()
	return pw, func() string { pw.Close(); return <-got }
}

// TestListJSONToSplits sends each reply through a real socket, split in
// two at every position (and a byte at a time), to a pipe and to a
// buffer: both give what the frame says, and the next reply reads what
// followed.
func TestListJSONToSplits(t *testing.T) {
	next := `{"ok":true,"result":"after"}` + "\n"
	for _, s := range listReplies {
		wantOut, wantErr, wantRest := wantList(s)
		full := string(okPrefix) + s
		var splits [][]string
		for p := 1; p < len(full); p++ {
			splits = append(splits, []string{full[:p], full[p:]})
		}
		// A byte at a time after a whole okPrefix, and from the start.
		splits = append(splits, append([]string{string(okPrefix)}, strings.Split(s, "")...), strings.Split(full, ""))
		for _, pieces := range splits {
			for _, toPipe := range []bool{true, false} {
				name := fmt.Sprintf("%q in %d pieces, %d bytes first, pipe %v", s, len(pieces), len(pieces[0]), toPipe)
				// A reply cut short: the daemon goes away once it is sent.
				cut := wantErr == "list: reading reply: EOF"
				replies := [][]string{pieces}
				if !cut {
					replies = append(replies, []string{next})
				}
				c, err := Dial(context.Background(), fakeDaemon(t, cut, replies...))
				if err != nil {
					t.Fatal(err)
				}
				var out string
				c.conn.Write([]byte("list\n"))
				if toPipe {
					w, wait := pipeOutput(t)
					err = c.readList(w)
					out = wait()
				} else {
					var b bytes.Buffer
					err = c.readList(&b)
					out = b.String()
				}
				// What followed the reply's newline is the next reply.
				rest, wantNext := "", ""
				if wantErr != "list: reading reply: EOF" {
					c.conn.Write([]byte("next\n"))
					rest, _ = c.r.ReadString('\n')
					wantNext, _, _ = strings.Cut(wantRest+next, "\n")
					wantNext += "\n"
				}
				checkList(t, name, out, err, rest, wantOut, wantErr, wantNext)
				c.Close()
			}
		}
	}
}

// TestListJSONToDeadline: a reply that stops coming ends at the caller's
// deadline with the same error whether it was going to a pipe or not (the
// words the shell looks for to drop the session included).
func TestListJSONToDeadline(t *testing.T) {
	var msgs []string
	for _, toPipe := range []bool{true, false} {
		path := fakeDaemon(t, false, []string{string(okPrefix) + "[1,2", ",3"})
		c, err := Dial(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		if toPipe {
			w, wait := pipeOutput(t)
			err = c.ListJSONTo(ctx, api.ListFilter{}, w)
			wait()
		} else {
			err = c.ListJSONTo(ctx, api.ListFilter{}, io.Discard)
		}
		cancel()
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !strings.HasPrefix(err.Error(), "list: reading reply: read unix ") {
			t.Errorf("pipe %v: error %v, want a timeout reading the reply", toPipe, err)
		}
		msgs = append(msgs, strings.ReplaceAll(fmt.Sprint(err), path, "PATH"))
		c.Close()
	}
	if msgs[0] != msgs[1] {
		t.Errorf("to a pipe the error is %q, elsewhere %q", msgs[0], msgs[1])
	}
}
