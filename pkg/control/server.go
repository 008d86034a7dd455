// Package control serves diskd's local API on a Unix socket (bound by
// package localsock, or passed by systemd): one session per connection,
// speaking the line protocol of package api to people (socat) and programs
// (diskctl's JSON form). It holds no state of its own: reads go to the
// store, actions to a Backend, and who may act is package authz's
// decision.
//
// Every bound a local user could push against is here: sessions per uid
// (MaxSessionsPerUser) and in all (MaxSessions, of which RootReserve only
// root may use, so root always has room), replies being written at once
// per uid (repliesPerUser, so a user's stuck clients hold at most that
// many copies of a reply), a write deadline on every reply (WriteTimeout:
// a client that stops reading is disconnected and its memory freed), an
// idle timeout, and a line length. A session's own buffers are fixed
// (api.MaxLineBytes to read, 4 KiB to write).
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
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"golang.org/x/sys/unix"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/authz"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/logging"
	"github.com/diskd/diskd/pkg/store"
)

// Backend performs the commands that act rather than read.
type Backend interface {
	Status() api.Status
	Refresh(ctx context.Context) error
	Ping(ctx context.Context) (answered int, err error)
	Announce() error
	// Mount and Unmount act on the disk q names, on whichever machine has
	// it; uid is the local user asking, already authorized.
	Mount(ctx context.Context, q string, rw bool, uid uint32) (api.MountResult, error)
	Unmount(ctx context.Context, q string, force bool, uid uint32) (api.MountResult, error)
}

// ErrNoNetwork is what a Backend returns for ping/announce when the peer
// network is off.
var ErrNoNetwork = errors.New("the peer network is off on this node")

// Defaults of the session bounds (see Config).
const (
	DefaultIdleTimeout        = 5 * time.Minute
	DefaultWriteTimeout       = 10 * time.Second
	DefaultMaxSessions        = 1024
	DefaultRootReserve        = 64
	DefaultMaxSessionsPerUser = 64
)

// repliesPerUser is how many replies one uid (root aside) may have being
// built and written at once; its other sessions wait for a turn. A reply
// holds a copy of what it answers (the whole table for list), so this,
// not the session count, bounds what a user's stuck clients can pin.
const repliesPerUser = 2

// Config configures a Server.
type Config struct {
	Listener    net.Listener
	Store       *store.Store
	Backend     Backend
	Version     string
	IdleTimeout time.Duration // 0 means DefaultIdleTimeout
	// WriteTimeout bounds the writing of each reply (and of each watch
	// event): a client that has not taken it by then is disconnected.
	// 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// MaxSessions bounds sessions in all, RootReserve of them kept for
	// root (and the daemon's own user); MaxSessionsPerUser bounds each
	// other uid. 0 means the defaults above.
	MaxSessions, RootReserve, MaxSessionsPerUser int
	// Policy decides who may act (refresh, announce, ping); nil means
	// root and the daemon's own user only.
	Policy *authz.Policy
	Logger *slog.Logger
	// Ready, when set, holds sessions until it is closed: the daemon closes
	// it after the first scan, so no client ever sees an empty inventory
	// that is merely not read yet.
	Ready <-chan struct{}
}

// Server runs sessions on a listener.
type Server struct {
	cfg  Config
	log  *slog.Logger
	lim  logging.Limiter
	self uint32

	mu    sync.Mutex
	total int
	users map[uint32]*userSessions
}

// userSessions is one uid's share of the server.
type userSessions struct {
	n       int
	replies chan struct{} // turns to write a reply; nil for root
}

// New returns a Server; Serve runs it.
func New(cfg Config) *Server {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.RootReserve <= 0 {
		cfg.RootReserve = DefaultRootReserve
	}
	cfg.RootReserve = min(cfg.RootReserve, cfg.MaxSessions-1)
	if cfg.MaxSessionsPerUser <= 0 {
		cfg.MaxSessionsPerUser = DefaultMaxSessionsPerUser
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Policy == nil {
		cfg.Policy = authz.New(authz.Config{Logger: cfg.Logger})
	}
	return &Server{cfg: cfg, log: cfg.Logger, self: uint32(os.Geteuid()), users: make(map[uint32]*userSessions)}
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
		cr := creds(c)
		u, refusal := s.admit(cr.UID)
		if refusal != "" {
			if ok, held := s.lim.Allow("refused session", time.Now()); ok {
				args := []any{"reason", refusal, "uid", cr.UID, "pid", cr.pid}
				if held > 0 {
					args = append(args, "similar_not_logged", held)
				}
				s.log.Warn("refused a session", args...)
			}
			c.SetWriteDeadline(time.Now().Add(time.Second))
			fmt.Fprintf(c, "error: %s\n", refusal)
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.leave(cr.UID)
			s.session(ctx, c, cr, u)
		}()
	}
}

// privileged: root, and the daemon's own user (an unprivileged `make
// run`), are not bound per user and have the reserve.
func (s *Server) privileged(uid uint32) bool { return uid == 0 || uid == s.self }

// admit counts a new session of uid, or says in one line why not.
func (s *Server) admit(uid uint32) (*userSessions, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	priv := s.privileged(uid)
	if s.total >= s.cfg.MaxSessions {
		return nil, fmt.Sprintf("too many sessions (%d); try again later", s.cfg.MaxSessions)
	}
	if limit := s.cfg.MaxSessions - s.cfg.RootReserve; !priv && s.total >= limit {
		return nil, fmt.Sprintf("too many sessions (%d; the other %d are kept for root); try again later", limit, s.cfg.RootReserve)
	}
	u := s.users[uid]
	if u == nil {
		u = &userSessions{}
		if !priv {
			u.replies = make(chan struct{}, repliesPerUser)
		}
		s.users[uid] = u
	}
	if !priv && u.n >= s.cfg.MaxSessionsPerUser {
		return nil, fmt.Sprintf("too many sessions for uid %d (%d at once); close some and try again", uid, s.cfg.MaxSessionsPerUser)
	}
	u.n++
	s.total++
	return u, ""
}

func (s *Server) leave(uid uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if u := s.users[uid]; u != nil {
		if u.n--; u.n == 0 {
			delete(s.users, uid)
		}
	}
}

// noUID stands for a client whose credentials cannot be read: it is
// nobody's uid, so it is never privileged.
const noUID = ^uint32(0)

// peerCreds is the client as the kernel vouches for it (SO_PEERCRED).
type peerCreds struct {
	authz.Caller
	pid int32
}

func creds(c net.Conn) peerCreds {
	unknown := peerCreds{Caller: authz.Caller{UID: noUID, Via: "socket", Who: "unknown process"}}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return unknown
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return unknown
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return unknown
	}
	return peerCreds{pid: cred.Pid, Caller: authz.Caller{UID: cred.Uid, GID: cred.Gid, HasGID: true,
		Via: "socket", Who: fmt.Sprintf("pid %d", cred.Pid)}}
}

type session struct {
	s      *Server
	c      net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	log    *slog.Logger
	caller authz.Caller
	u      *userSessions
	turn   bool // holds one of u.replies
	// sendBuf is the socket's default send buffer once growSendBuffer
	// raised it (0 before), replyDeadline the current reply's.
	sendBuf       int
	replyDeadline time.Time
}

func (s *Server) session(ctx context.Context, c net.Conn, cr peerCreds, u *userSessions) {
	defer c.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Closing the connection is how a stop interrupts a blocked read.
	go func() {
		<-ctx.Done()
		c.SetDeadline(time.Now())
	}()
	ss := &session{s: s, c: c, r: bufio.NewReaderSize(c, api.MaxLineBytes+2), w: bufio.NewWriter(c),
		log: s.log.With(slog.Group("peer", "pid", cr.pid, "uid", cr.UID, "gid", cr.GID)), caller: cr.Caller, u: u}
	ss.log.Debug("session start")
	if s.cfg.Ready != nil {
		select {
		case <-s.cfg.Ready:
		case <-ctx.Done():
			return
		}
	}
	local := s.cfg.Store.LocalNode()
	ss.startReply()
	fmt.Fprintf(ss.w, "%s%s on %s; type \"help\" for commands\n", api.GreetingPrefix, s.cfg.Version, local.Name)
	if !ss.flush() {
		return
	}
	for {
		c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		line, err := ss.readLine()
		if err != nil {
			ss.startReply()
			if errors.Is(err, errLineTooLong) {
				ss.logLimited("long line", "closing session: request line too long", "limit", api.MaxLineBytes)
				fmt.Fprintf(ss.w, "error: line longer than %d bytes; closing\n", api.MaxLineBytes)
				ss.w.Flush()
			} else if ne, ok := err.(net.Error); ok && ne.Timeout() && ctx.Err() == nil {
				fmt.Fprintf(ss.w, "error: idle for %s; closing\n", s.cfg.IdleTimeout)
				ss.w.Flush()
			}
			return
		}
		c.SetReadDeadline(time.Time{})
		if !ss.takeTurn(ctx) {
			return
		}
		more := ss.handle(ctx, line)
		ok := ss.flush() && ss.drain(ctx)
		ss.endTurn()
		if !more || !ok {
			return
		}
	}
}

// takeTurn waits until this uid may have one more reply in the making.
func (ss *session) takeTurn(ctx context.Context) bool {
	if ss.u.replies == nil {
		return true
	}
	select {
	case ss.u.replies <- struct{}{}:
		ss.turn = true
		return true
	case <-ctx.Done():
		return false
	}
}

// endTurn gives the turn back (watch does so once it has answered).
func (ss *session) endTurn() {
	if ss.turn {
		ss.turn = false
		<-ss.u.replies
	}
}

// startReply starts the reply's write deadline: from here the client has
// WriteTimeout to take all of it.
func (ss *session) startReply() {
	ss.replyDeadline = time.Now().Add(ss.s.cfg.WriteTimeout)
	ss.c.SetWriteDeadline(ss.replyDeadline)
}

// flush sends what is buffered; a client that does not take it within the
// deadline is disconnected (the caller returns, which frees the session).
func (ss *session) flush() bool {
	err := ss.w.Flush()
	if err == nil {
		return true
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		ss.logLimited("slow reader", "closing session: the client did not read its reply", "write_timeout", ss.s.cfg.WriteTimeout)
	}
	return false
}

// logLimited logs a line a client can cause, at most once per kind every
// 10 s.
func (ss *session) logLimited(kind, msg string, args ...any) {
	if ok, held := ss.s.lim.Allow(kind, time.Now()); ok {
		if held > 0 {
			args = append(args, "similar_not_logged", held)
		}
		ss.log.Warn(msg, args...)
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
			ss.startReply()
			ss.reply(nil, fmt.Errorf("bad request: %s", api.Clip(err.Error())))
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
		switch req.Cmd {
		case "list":
			var ok bool
			if req.Host, req.Present, req.Label, ok = parseListArgs(rest); !ok {
				ss.startReply()
				fmt.Fprintf(ss.w, "error: usage: %s\n\n", usage("list"))
				return true
			}
		case "mount", "unmount":
			// "mount --rw LABEL", "unmount --force LABEL": the label is
			// the rest of the line, spaces and all.
			if r, ok := strings.CutPrefix(rest, "--rw "); ok && req.Cmd == "mount" {
				req.RW, rest = true, strings.TrimSpace(r)
			}
			if r, ok := strings.CutPrefix(rest, "--force "); ok && req.Cmd == "unmount" {
				req.Force, rest = true, strings.TrimSpace(r)
			}
			req.Arg = rest
		default:
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
	if err := ss.s.cfg.Policy.Check(ss.caller, req.Cmd); err != nil {
		return ss.answer(nil, err, nil, asJSON)
	}
	switch req.Cmd {
	case "help":
		result = api.Commands
		text = func(w io.Writer) {
			for _, c := range api.Commands {
				fmt.Fprintf(w, "  %-10s %-12s %s\n", c.Name, c.Args, c.Help)
			}
		}
	case "list":
		f := api.ListFilter{Host: req.Host, Present: req.Present, Label: req.Label}
		keep, ferr := listFilter(st, f)
		if ferr == nil {
			ss.growSendBuffer() // the largest reply (sendbuf.go)
		}
		switch {
		case ferr != nil:
			err = ferr
		case asJSON:
			// Each disk's cached encoding, written as it is.
			result = st.DisksJSON(keep, f.KeepLabel())
		default:
			ds := st.Disks(keep)
			if byLabel := f.KeepLabel(); byLabel != nil {
				// Outside the table's lock, as DisksJSON does.
				ds = slices.DeleteFunc(ds, func(d disk.Disk) bool { return !byLabel(d.Label) })
			}
			text = func(w io.Writer) { api.WriteDisks(w, ds) }
		}
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
		err = be.Refresh(ctx)
		result = struct{}{}
		text = func(w io.Writer) { fmt.Fprintln(w, "refreshed") }
	case "announce":
		err = be.Announce()
		result = struct{}{}
		text = func(w io.Writer) { fmt.Fprintln(w, "announced") }
	case "ping":
		n, perr := be.Ping(ctx)
		err = perr
		result = api.PingResult{Answered: n}
		text = func(w io.Writer) { fmt.Fprintf(w, "%d peers answered within a second\n", n) }
	case "mount", "unmount":
		if req.Arg == "" {
			err = fmt.Errorf("usage: %s", usage(req.Cmd))
			break
		}
		var r api.MountResult
		if req.Cmd == "mount" {
			r, err = be.Mount(ctx, req.Arg, req.RW, ss.caller.UID)
			text = func(w io.Writer) { api.WriteMounted(w, r) }
		} else {
			r, err = be.Unmount(ctx, req.Arg, req.Force, ss.caller.UID)
			text = func(w io.Writer) { api.WriteUnmounted(w, r) }
		}
		result = r
	case "watch":
		ss.startReply()
		if asJSON {
			ss.reply(struct{}{}, nil)
		} else {
			fmt.Fprintln(ss.w, "watching; close the connection to stop")
		}
		if ss.flush() {
			ss.endTurn() // a watch lasts; it holds no reply in the making
			ss.watch(ctx, asJSON)
		}
		return false
	case "quit", "exit":
		ss.startReply()
		if asJSON {
			ss.reply(struct{}{}, nil)
		} else {
			fmt.Fprintln(ss.w, "bye")
		}
		return false
	default:
		err = fmt.Errorf("unknown command %s; try \"help\"", api.Quote(req.Cmd))
	}
	return ss.answer(result, err, text, asJSON)
}

// answer writes a request's reply: JSON, or the text form (an error line)
// and the closing blank line.
func (ss *session) answer(result any, err error, text func(io.Writer), asJSON bool) bool {
	ss.startReply()
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

// parseListArgs reads the text form's "[--present] [--label GLOB] [HOST]":
// the options first, in any order; the rest of the line is the host,
// spaces and all, as before there were options. A glob is one word (a
// label with a space is matched with ? or *; the JSON form takes any).
// It is not ok when --label has no glob after it.
func parseListArgs(rest string) (host string, present bool, label string, ok bool) {
	for {
		word, after := cutWord(rest)
		switch {
		case word == "--present":
			present, rest = true, after
		case word == "--label":
			if after == "" {
				return "", false, "", false
			}
			label, rest = cutWord(after)
		default:
			return rest, present, label, true
		}
	}
}

// cutWord splits s (trimmed) at its first run of white space.
func cutWord(s string) (word, rest string) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, unicode.IsSpace)
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimSpace(s[i:])
}

// listFilter checks f and returns its host and presence as a predicate
// (nil: everything); the label is f.KeepLabel's.
func listFilter(st *store.Store, f api.ListFilter) (func(*disk.Disk) bool, error) {
	var id disk.NodeID
	if f.Host != "" {
		for _, n := range st.Nodes() {
			if n.Name == f.Host || string(n.ID) == f.Host {
				id = n.ID
				break
			}
		}
		if id == "" {
			return nil, fmt.Errorf("no host named %s", api.Quote(f.Host))
		}
	}
	// After the host, as D-Bus checks its options.
	if err := api.CheckLabelGlob(f.Label); err != nil {
		return nil, err
	}
	return f.Keep(id), nil
}

func (ss *session) reply(result any, err error) {
	if ds, ok := result.([]disk.Disk); ok && err == nil {
		ss.replyDisks(ds)
		return
	}
	if l, ok := result.(*store.JSONList); ok && err == nil {
		// Framed as replyDisks frames it; the bytes were encoded when
		// each disk last changed.
		ss.w.WriteString(`{"ok":true,"result":`)
		if _, err := l.WriteTo(ss.w); err != nil {
			return // past the deadline: the session ends
		}
		ss.w.WriteString("}\n")
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
		if _, err := ss.w.Write(buf); err != nil {
			return // past the deadline: the session ends
		}
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
	ss.startReply()
	if asJSON {
		b, _ := json.Marshal(ev)
		ss.w.Write(b)
		ss.w.WriteByte('\n')
	} else if ev.Kind == "overflow" {
		fmt.Fprintln(ss.w, "(events were dropped: this client fell behind; run list to resync)")
	} else {
		api.WriteEvent(ss.w, ev)
	}
	return ss.flush()
}

func usage(cmd string) string {
	for _, c := range api.Commands {
		if c.Name == cmd {
			return strings.TrimSpace(c.Name + " " + c.Args)
		}
	}
	return cmd
}
