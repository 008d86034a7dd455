// Package ctlclient is the client side of diskd's Unix-socket API, used by
// diskctl. It speaks the JSON form of the protocol in package api and
// links nothing of the daemon.
package ctlclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/localsock"
)

// Client is one session with the daemon. Not safe for concurrent use.
type Client struct {
	conn     net.Conn
	path     string
	src      *pushback // conn, as c.r reads it
	r        *bufio.Reader
	greeted  bool // the greeting was read
	Greeting string
}

// Dial connects to the daemon's socket and reads its greeting. Failing to
// connect is localsock.ErrNoDaemon.
func Dial(ctx context.Context, path string) (*Client, error) {
	c, err := localsock.Dial(ctx, path)
	if err != nil {
		return nil, err
	}
	cl := newClient(c, path)
	if dl, ok := ctx.Deadline(); ok {
		c.SetReadDeadline(dl)
	}
	err = cl.greet()
	c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return nil, err
	}
	return cl, nil
}

// DialShortLived is Dial for a process that asks once or twice and exits
// (`diskctl where`): the connection is localsock.DialBlocking's, and the
// first request goes out without waiting for the greeting, which is read
// and checked with the first reply. Not for Watch, which is stopped from
// another goroutine.
func DialShortLived(ctx context.Context, path string) (*Client, error) {
	c, err := localsock.DialBlocking(ctx, path)
	if err != nil {
		return nil, err
	}
	return newClient(c, path), nil
}

func newClient(c net.Conn, path string) *Client {
	src := &pushback{r: c}
	return &Client{conn: c, path: path, src: src, r: bufio.NewReader(src)}
}

// greet reads the greeting unless it was read.
func (c *Client) greet() error {
	if c.greeted {
		return nil
	}
	g, err := c.r.ReadString('\n')
	if err != nil || !strings.HasPrefix(g, api.GreetingPrefix) {
		return fmt.Errorf("%s does not speak the diskd protocol (greeting %q: %v)", c.path, clip(g), err)
	}
	c.greeted = true
	c.Greeting = strings.TrimSpace(g)
	return nil
}

func clip(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

var okPrefix = []byte(`{"ok":true,"result":`)

// Close ends the session.
func (c *Client) Close() error { return c.conn.Close() }

// Do sends req and decodes the result into out (which may be nil).
func (c *Client) Do(ctx context.Context, req api.Request, out any) error {
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(dl)
		defer c.conn.SetDeadline(time.Time{})
	}
	b := append(req.AppendJSON(make([]byte, 0, 128)), '\n')
	if _, err := c.conn.Write(b); err != nil {
		return c.sendError(req.Cmd, err)
	}
	return c.readResponse(req.Cmd, out)
}

// sendError is a failed request's error. Before the greeting was read, a
// daemon that hung up may have said why in its place (a session refused,
// or no diskd at all): that is the error then, as Dial would have
// reported it.
func (c *Client) sendError(cmd string, err error) error {
	if gerr := c.greet(); gerr != nil {
		return gerr
	}
	return fmt.Errorf("send %s: %w", cmd, err)
}

func (c *Client) readResponse(cmd string, out any) error {
	if err := c.greet(); err != nil {
		return err
	}
	line, err := c.readLine()
	if err != nil {
		return fmt.Errorf("%s: reading reply: %w", cmd, err)
	}
	// A successful reply is framed as okPrefix RESULT "}": a caller that
	// only passes the result on gets it without parsing tens of MB thrice,
	// and disks are read by disk.ParseJSONArray, without encoding/json's
	// reflection (which costs a short-lived diskctl about 0.2 ms to set up,
	// a tenth of a `where`). line is this call's own, so the disks' strings
	// can be its bytes.
	if bytes.HasPrefix(line, okPrefix) && bytes.HasSuffix(line, []byte("}\n")) {
		result := line[len(okPrefix) : len(line)-2]
		switch out := out.(type) {
		case *json.RawMessage:
			*out = result
			return nil
		case *[]disk.Disk:
			ds, err := disk.ParseJSONArrayShared(result)
			if err != nil {
				return fmt.Errorf("%s: decoding result: %w", cmd, err)
			}
			*out = ds
			return nil
		}
	}
	var resp api.Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return fmt.Errorf("%s: malformed reply: %w", cmd, err)
	}
	if !resp.OK {
		return fmt.Errorf("%s", resp.Error)
	}
	if out != nil && len(resp.Result) > 0 {
		if err := json.Unmarshal(resp.Result, out); err != nil {
			return fmt.Errorf("%s: decoding result: %w", cmd, err)
		}
	}
	return nil
}

// readLine reads one reply line, newline included, into a slice of its
// own. A long one (a list of 100,000 disks is 40 MB) is read from the
// socket straight into blocks of copySize, not through c.r 4 KiB at a
// time, and the blocks are joined once, a block at a time: every copy
// short enough for the collector to stop this goroutine between two (a
// copy of tens of MB cannot be, and made it spin, measured on
// diskctl's table of 100,000 disks).
func (c *Client) readLine() ([]byte, error) {
	frag, err := c.r.ReadSlice('\n')
	if err == nil {
		return bytes.Clone(frag), nil
	}
	if err != bufio.ErrBufferFull {
		return nil, err
	}
	// c.r gave all it held: the rest is read from c.src.
	blocks := [][]byte{bytes.Clone(frag)}
	size := len(frag)
	for blk := make([]byte, 0, copySize); ; {
		if len(blk) == cap(blk) {
			blocks = append(blocks, blk)
			blk = make([]byte, 0, copySize)
		}
		n, err := c.src.Read(blk[len(blk):cap(blk)])
		if i := bytes.IndexByte(blk[len(blk):len(blk)+n], '\n'); i >= 0 {
			c.src.pushBack(blk[len(blk)+i+1 : len(blk)+n])
			blocks = append(blocks, blk[:len(blk)+i+1])
			size += len(blk) + i + 1
			break
		}
		blk = blk[:len(blk)+n]
		size += n
		if err != nil {
			return nil, err
		}
	}
	line := make([]byte, 0, size)
	for _, b := range blocks {
		line = append(line, b...)
	}
	return line, nil
}

func listRequest(f api.ListFilter) api.Request {
	return api.Request{Cmd: "list", Host: f.Host, Present: f.Present, Label: f.Label}
}

// List returns the disks the daemon knows that f keeps. The reply is
// decoded by disk.ParseJSONArray: 100,000 disks through encoding/json
// would take longer than the daemon spent answering.
func (c *Client) List(ctx context.Context, f api.ListFilter) ([]disk.Disk, error) {
	var ds []disk.Disk
	return ds, c.Do(ctx, listRequest(f), &ds)
}

// ListJSONTo writes the list as the daemon encoded it (a JSON array) to
// w as it arrives, for callers that only pass it on: the reply is never
// held whole. When w fails the session is closed, as the rest of the
// reply is still on its way.
//
// A list of 100,000 disks is 40 MB, so the bytes are copied as few times
// as the frame allows: read straight into one large buffer and written
// from it. Only the byte that may be the "}" closing the frame is held
// back. (Moving them into a pipe by splice(2) instead was measured: no
// difference once the daemon writes ahead, see pkg/control's sendbuf.go.)
func (c *Client) ListJSONTo(ctx context.Context, f api.ListFilter, w io.Writer) error {
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(dl)
		defer c.conn.SetDeadline(time.Time{})
	}
	if _, err := c.conn.Write(append(listRequest(f).AppendJSON(nil), '\n')); err != nil {
		return c.sendError("list", err)
	}
	return c.readList(w)
}

// readList passes on a list reply.
func (c *Client) readList(w io.Writer) error {
	if err := c.greet(); err != nil {
		return err
	}
	if head, err := c.r.Peek(len(okPrefix)); err != nil || !bytes.Equal(head, okPrefix) {
		return c.readResponse("list", nil) // an error reply (or a broken one)
	}
	c.r.Discard(len(okPrefix))
	// Reads through c.r hand over what it holds, then (the buffer being
	// larger than c.r's) read the socket straight into buf.
	rest, err := copyResult(c.r, w, make([]byte, copySize))
	c.src.pushBack(rest)
	var we writeError
	if errors.As(err, &we) {
		c.conn.Close()
		return we.error
	}
	return err
}

// copySize is how much of a list reply is read (and written on) at once:
// more than the daemon's socket buffer holds, so one read takes all that
// has arrived.
const copySize = 1 << 20

// errMalformed is a successful reply's frame not closed by "}\n".
var errMalformed = errors.New("list: malformed reply")

// writeError is w's own error, which ListJSONTo returns as it is.
type writeError struct{ error }

func (e writeError) Unwrap() error { return e.error }

// copyResult copies the result of a list reply, whose okPrefix has been
// read, from r to w: every byte up to the reply's newline but the "}"
// before it, which closes the frame. A "}" at the end of a read may be
// that one, so it waits at buf[0] for the next read. It returns what r
// yielded past the newline, which belongs to the next reply.
func copyResult(r io.Reader, w io.Writer, buf []byte) (rest []byte, err error) {
	held := 0 // 1 when buf[0] is a '}' read and not yet written
	for {
		n, rerr := r.Read(buf[held:])
		if n > 0 {
			chunk := buf[:held+n]
			if i := bytes.IndexByte(chunk[held:], '\n'); i >= 0 {
				i += held
				rest = chunk[i+1:]
				if i == 0 || chunk[i-1] != '}' {
					return rest, errMalformed
				}
				if i > 1 {
					if _, err := w.Write(chunk[:i-1]); err != nil {
						return rest, writeError{err}
					}
				}
				return rest, nil
			}
			end := len(chunk)
			if chunk[end-1] == '}' {
				end--
			}
			if end > 0 {
				if _, err := w.Write(chunk[:end]); err != nil {
					return nil, writeError{err}
				}
			}
			held = len(chunk) - end
			if held > 0 {
				buf[0] = '}'
			}
		}
		if rerr != nil {
			return nil, fmt.Errorf("list: reading reply: %w", rerr)
		}
	}
}

// pushback is the socket as c.r reads it, with the bytes a list read past
// the end of its reply put back in front.
type pushback struct {
	pre []byte
	r   io.Reader
}

func (p *pushback) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.r.Read(b)
}

// pushBack puts b back in front of what is still to be read. c.r holds
// nothing then (copyResult's reads emptied it), nor does p.pre (it was
// read first).
func (p *pushback) pushBack(b []byte) {
	if len(b) > 0 {
		p.pre = append(p.pre[:len(p.pre):len(p.pre)], b...)
	}
}

// Where returns the disks that q names, present first.
func (c *Client) Where(ctx context.Context, q string) ([]disk.Disk, error) {
	var ds []disk.Disk
	return ds, c.Do(ctx, api.Request{Cmd: "where", Arg: q}, &ds)
}

// History returns the disks that q names, each with where and when it
// was seen, newest first.
func (c *Client) History(ctx context.Context, q string) ([]disk.History, error) {
	var hs []disk.History
	if err := c.Do(ctx, api.Request{Cmd: "history", Arg: q}, &hs); err != nil {
		return nil, err
	}
	if hs == nil {
		hs = []disk.History{} // as "[]" on the wire
	}
	return hs, nil
}

// Peers returns the known nodes.
func (c *Client) Peers(ctx context.Context) ([]disk.Node, error) {
	var ns []disk.Node
	return ns, c.Do(ctx, api.Request{Cmd: "peers"}, &ns)
}

// Localhost returns this node's identity.
func (c *Client) Localhost(ctx context.Context) (api.Localhost, error) {
	var l api.Localhost
	return l, c.Do(ctx, api.Request{Cmd: "localhost"}, &l)
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var s api.Status
	return s, c.Do(ctx, api.Request{Cmd: "status"}, &s)
}

// Refresh asks for a rescan and waits for it.
func (c *Client) Refresh(ctx context.Context) error {
	return c.Do(ctx, api.Request{Cmd: "refresh"}, nil)
}

// Announce asks the daemon to send its inventory to its peers now.
func (c *Client) Announce(ctx context.Context) error {
	return c.Do(ctx, api.Request{Cmd: "announce"}, nil)
}

// Mount asks the machine that has the disk q names to mount it.
func (c *Client) Mount(ctx context.Context, q string, rw bool) (api.MountResult, error) {
	var r api.MountResult
	return r, c.Do(ctx, api.Request{Cmd: "mount", Arg: q, RW: rw}, &r)
}

// Unmount asks the machine that has the disk q names to unmount it.
func (c *Client) Unmount(ctx context.Context, q string, force bool) (api.MountResult, error) {
	var r api.MountResult
	return r, c.Do(ctx, api.Request{Cmd: "unmount", Arg: q, Force: force}, &r)
}

// Ping asks every peer to answer.
func (c *Client) Ping(ctx context.Context) (api.PingResult, error) {
	var p api.PingResult
	return p, c.Do(ctx, api.Request{Cmd: "ping"}, &p)
}

// Watch calls fn for each change until ctx ends or the daemon goes away.
// It uses up the session.
func (c *Client) Watch(ctx context.Context, fn func(api.WatchEvent)) error {
	if err := c.Do(ctx, api.Request{Cmd: "watch"}, nil); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		line, err := c.r.ReadBytes('\n')
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch: %w", err)
		}
		var ev api.WatchEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("watch: malformed event: %w", err)
		}
		fn(ev)
	}
}
