// Package control serves diskd's local API on a Unix socket: binding it (or
// taking the one systemd passed), running one session per connection, and
// speaking the line protocol of package api to people (socat) and programs
// (diskctl's JSON form). It holds no state of its own: reads go to the
// store, actions to a Backend.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
)

// Backend performs the commands that act rather than read.
type Backend interface {
	Status() api.Status
	Refresh(ctx context.Context) error
	Ping(ctx context.Context) (answered int, err error)
	Announce() error
}

// ErrNoNetwork is what a Backend returns for ping/announce when the peer
// network is off.
var ErrNoNetwork = errors.New("the peer network is off on this node")

// Config configures a Server.
type Config struct {
	Listener    net.Listener
	Store       *store.Store
	Backend     Backend
	Version     string
	IdleTimeout time.Duration // 0 means 5 minutes
	MaxSessions int           // 0 means 1024
	Logger      *slog.Logger
	// Ready, when set, holds sessions until it is closed: the daemon closes
	// it after the first scan, so no client ever sees an empty inventory
	// that is merely not read yet.
	Ready <-chan struct{}
}

// Server runs sessions on a listener.
type Server struct {
	cfg Config
	log *slog.Logger
}

// New returns a Server; Serve runs it.
func New(cfg Config) *Server {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 1024
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: cfg.Logger}
}

// Listen binds a Unix socket at path, creating its directory. A stale
// socket file (nothing accepting on it) is replaced; a live one is an
// error, so two daemons never share a path. The socket is open to every
// local user: reads are public and actions are rate-limited.
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	// A directory someone else controls (say a planted /tmp/diskd-UID)
	// could swap the socket for theirs under diskctl's feet.
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if (st.Uid != uint32(os.Geteuid()) && st.Uid != 0) || st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return nil, fmt.Errorf("socket directory %s is owned by uid %d or writable by others; refusing to listen there", dir, st.Uid)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s: another diskd is already listening there", path)
	} else if errors.Is(err, syscall.ECONNREFUSED) {
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		l.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return l, nil
}

// Serve accepts sessions until ctx ends, then closes the listener and
// waits for open sessions to finish.
func (s *Server) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		s.cfg.Listener.Close()
	}()
	sem := make(chan struct{}, s.cfg.MaxSessions)
	for {
		c, err := s.cfg.Listener.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		select {
		case sem <- struct{}{}:
		default:
			fmt.Fprintf(c, "error: too many sessions (%d); try again later\n", s.cfg.MaxSessions)
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.session(ctx, c)
		}()
	}
}

// peer describes the client for the log, from SO_PEERCRED.
func peer(c net.Conn) slog.Attr {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return slog.String("peer", "?")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return slog.String("peer", "?")
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return slog.String("peer", "?")
	}
	return slog.Group("peer", "pid", cred.Pid, "uid", cred.Uid, "gid", cred.Gid)
}

type session struct {
	s   *Server
	c   net.Conn
	r   *bufio.Reader
	w   *bufio.Writer
	log *slog.Logger
}

func (s *Server) session(ctx context.Context, c net.Conn) {
	defer c.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Closing the connection is how a stop interrupts a blocked read.
	go func() {
		<-ctx.Done()
		c.SetDeadline(time.Now())
	}()
	ss := &session{s: s, c: c, r: bufio.NewReaderSize(c, api.MaxLineBytes+2), w: bufio.NewWriter(c),
		log: s.log.With(peer(c))}
	ss.log.Debug("session start")
	if s.cfg.Ready != nil {
		select {
		case <-s.cfg.Ready:
		case <-ctx.Done():
			return
		}
	}
	local := s.cfg.Store.LocalNode()
	fmt.Fprintf(ss.w, "%s%s on %s; type \"help\" for commands\n", api.GreetingPrefix, s.cfg.Version, local.Name)
	ss.w.Flush()
	for {
		c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		line, err := ss.readLine()
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				ss.log.Warn("closing session: request line too long", "limit", api.MaxLineBytes)
				fmt.Fprintf(ss.w, "error: line longer than %d bytes; closing\n", api.MaxLineBytes)
				ss.w.Flush()
			} else if ne, ok := err.(net.Error); ok && ne.Timeout() && ctx.Err() == nil {
				fmt.Fprintf(ss.w, "error: idle for %s; closing\n", s.cfg.IdleTimeout)
				ss.w.Flush()
			}
			return
		}
		c.SetReadDeadline(time.Time{})
		if !ss.handle(ctx, line) {
			return
		}
		if err := ss.w.Flush(); err != nil {
			return
		}
	}
}

var errLineTooLong = errors.New("line too long")

func (ss *session) readLine() (string, error) {
	line, err := ss.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(line) > api.MaxLineBytes+1 {
		return "", errLineTooLong
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			return strings.TrimRight(string(line), "\r\n"), nil
		}
		return "", err
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

// handle runs one request; false ends the session.
func (ss *session) handle(ctx context.Context, line string) bool {
	if strings.HasPrefix(line, "{") {
		var req api.Request
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			ss.reply(nil, fmt.Errorf("bad request: %v", err))
			return true
		}
		return ss.run(ctx, req, true)
	}
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return true
	}
	req := api.Request{Cmd: strings.ToLower(fields[0])}
	if rest := strings.TrimSpace(line[len(fields[0]):]); rest != "" {
		if req.Cmd == "list" {
			req.Host = rest
		} else {
			req.Arg = rest
		}
	}
	return ss.run(ctx, req, false)
}

func (ss *session) run(ctx context.Context, req api.Request, asJSON bool) bool {
	st := ss.s.cfg.Store
	be := ss.s.cfg.Backend
	var (
		result any
		err    error
		text   func(io.Writer)
	)
	switch req.Cmd {
	case "help":
		result = api.Commands
		text = func(w io.Writer) {
			for _, c := range api.Commands {
				fmt.Fprintf(w, "  %-10s %-12s %s\n", c.Name, c.Args, c.Help)
			}
		}
	case "list":
		ds, lerr := listDisks(st, req.Host)
		result, err = ds, lerr
		text = func(w io.Writer) { api.WriteDisks(w, ds) }
	case "where":
		if req.Arg == "" {
			err = errors.New("usage: where LABEL|UUID")
			break
		}
		ds := st.Where(req.Arg)
		result = ds
		text = func(w io.Writer) { api.WriteWhere(w, req.Arg, ds) }
	case "history":
		if req.Arg == "" {
			err = errors.New("usage: history LABEL|UUID")
			break
		}
		hs := st.History(req.Arg)
		result = hs
		text = func(w io.Writer) { api.WriteHistory(w, req.Arg, hs) }
	case "peers":
		ns := st.Nodes()
		result = ns
		text = func(w io.Writer) { api.WriteNodes(w, ns) }
	case "localhost":
		n := st.LocalNode()
		l := api.Localhost{NodeID: n.ID, Name: n.Name, Addresses: n.Addresses}
		result = l
		text = func(w io.Writer) { api.WriteLocalhost(w, l) }
	case "status":
		s := be.Status()
		result = s
		text = func(w io.Writer) { api.WriteStatus(w, s) }
	case "refresh":
		ss.log.Info("refresh requested")
		err = be.Refresh(ctx)
		result = struct{}{}
		text = func(w io.Writer) { fmt.Fprintln(w, "refreshed") }
	case "announce":
		err = be.Announce()
		result = struct{}{}
		text = func(w io.Writer) { fmt.Fprintln(w, "announced") }
	case "ping":
		ss.log.Info("ping requested")
		n, perr := be.Ping(ctx)
		err = perr
		result = api.PingResult{Answered: n}
		text = func(w io.Writer) { fmt.Fprintf(w, "%d peers answered within a second\n", n) }
	case "watch":
		if asJSON {
			ss.reply(struct{}{}, nil)
		} else {
			fmt.Fprintln(ss.w, "watching; close the connection to stop")
		}
		ss.w.Flush()
		ss.watch(ctx, asJSON)
		return false
	case "quit", "exit":
		if asJSON {
			ss.reply(struct{}{}, nil)
		} else {
			fmt.Fprintln(ss.w, "bye")
		}
		return false
	default:
		err = fmt.Errorf("unknown command %q; try \"help\"", clip(req.Cmd, 40))
	}
	if asJSON {
		ss.reply(result, err)
		return true
	}
	if err != nil {
		fmt.Fprintf(ss.w, "error: %v\n\n", err)
		return true
	}
	text(ss.w)
	fmt.Fprintln(ss.w)
	return true
}

func listDisks(st *store.Store, host string) ([]disk.Disk, error) {
	if host == "" {
		return st.Disks(nil), nil
	}
	var id disk.NodeID
	for _, n := range st.Nodes() {
		if n.Name == host || string(n.ID) == host {
			id = n.ID
			break
		}
	}
	if id == "" {
		return nil, fmt.Errorf("no host named %q", clip(host, 80))
	}
	return st.Disks(func(d *disk.Disk) bool { return d.Node == id }), nil
}

func (ss *session) reply(result any, err error) {
	if ds, ok := result.([]disk.Disk); ok && err == nil {
		ss.replyDisks(ds)
		return
	}
	resp := api.Response{OK: err == nil}
	if err != nil {
		resp.Error = err.Error()
	} else {
		b, merr := json.Marshal(result)
		if merr != nil {
			resp = api.Response{Error: "encode reply: " + merr.Error()}
		} else {
			resp.Result = b
		}
	}
	b, _ := json.Marshal(resp)
	ss.w.Write(b)
	ss.w.WriteByte('\n')
}

// replyDisks streams a disk list reply without building it in memory
// first: the largest reply (100,000 disks, tens of MB) costs one small
// buffer, not three copies of the whole.
func (ss *session) replyDisks(ds []disk.Disk) {
	ss.w.WriteString(`{"ok":true,"result":[`)
	buf := make([]byte, 0, 1024)
	for i := range ds {
		buf = buf[:0]
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = disk.AppendJSON(buf, &ds[i])
		ss.w.Write(buf)
	}
	ss.w.WriteString("]}\n")
}

// watch streams store events until the client leaves or the server stops.
func (ss *session) watch(ctx context.Context, asJSON bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// Anything the client sends, or its leaving, ends the watch.
		ss.c.SetReadDeadline(time.Time{})
		ss.r.ReadByte()
		cancel()
	}()
	st := ss.s.cfg.Store
	for {
		sub := st.Subscribe(1024)
		for open := true; open; {
			select {
			case <-ctx.Done():
				sub.Close()
				return
			case ev, ok := <-sub.C:
				if !ok {
					open = false
					break
				}
				if !ss.writeEvent(api.NewEvent(ev), asJSON) {
					sub.Close()
					return
				}
			}
		}
		// Fell behind: say so, then carry on with a new subscription.
		if !ss.writeEvent(api.WatchEvent{Kind: "overflow", Time: time.Now()}, asJSON) {
			return
		}
	}
}

func (ss *session) writeEvent(ev api.WatchEvent, asJSON bool) bool {
	ss.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if asJSON {
		b, _ := json.Marshal(ev)
		ss.w.Write(b)
		ss.w.WriteByte('\n')
	} else if ev.Kind == "overflow" {
		fmt.Fprintln(ss.w, "(events were dropped: this client fell behind; run list to resync)")
	} else {
		api.WriteEvent(ss.w, ev)
	}
	return ss.w.Flush() == nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
