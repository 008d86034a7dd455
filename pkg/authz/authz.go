// Package authz owns the local authorization decision, shared by the Unix
// socket and D-Bus: given who asks (a uid the kernel or the bus vouches
// for, and the process's group when known) and what, is it allowed.
//
// Reading (list, where, peers, status, watch, localhost, history) is for
// everyone. Acting (refresh, announce, ping; mounts later) is for root,
// the daemon's own user (so an unprivileged `make run` can be driven by
// whoever started it), and the members of the admin group (--admin-group,
// default "diskd", which the package creates).
//
// Membership is what /etc/group says (through os/user, so supplementary
// groups count), or the caller process's own group when the transport
// knows it (SO_PEERCRED): a user added to the group may act without
// logging in again, and one removed loses the right within MemberTTL.
// diskd is built without cgo, so os/user reads /etc/passwd and /etc/group
// only: groups from NSS modules (LDAP, sssd) are not seen.
package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/diskd/diskd/pkg/logging"
)

// DefaultAdminGroup is the group the packages create.
const DefaultAdminGroup = "diskd"

// MemberTTL is how long a uid's membership of the admin group is cached.
// os/user in diskd's static build parses /etc/passwd and /etc/group whole
// on every lookup; without a cache a user repeating a refused `refresh`
// would make the daemon reread both files per line. Five seconds keeps a
// `gpasswd -d` effective before anyone could notice the delay.
const MemberTTL = 5 * time.Second

// maxCached bounds the membership cache (it is cleared when full; uids
// are the machine's own users, so this is never reached in practice).
const maxCached = 1024

// adminActions are the actions only admins may take; every other action
// is a read, open to everyone.
var adminActions = map[string]bool{"refresh": true, "announce": true, "ping": true, "mount": true, "unmount": true}

// IsAdminAction reports whether action needs an admin.
func IsAdminAction(action string) bool { return adminActions[action] }

// Caller is who asks, as a transport knows it.
type Caller struct {
	UID uint32
	// GID is the process's effective group (SO_PEERCRED); HasGID says the
	// transport knew it (D-Bus does not tell).
	GID    uint32
	HasGID bool
	// Via names the transport ("socket", "D-Bus") and Who the client in
	// it ("pid 1234", "sender :1.42"), for the log.
	Via, Who string
}

// Config configures a Policy.
type Config struct {
	// AdminGroup's members may act. Empty means no group: only root and
	// the daemon's own user.
	AdminGroup string
	Logger     *slog.Logger
	// Groups returns the group IDs uid belongs to (primary and
	// supplementary); nil means os/user. For tests of the logic.
	Groups func(uid uint32) ([]string, error)
	// GroupID resolves AdminGroup; nil means os/user. For tests.
	GroupID func(name string) (string, error)
	// Now is the clock; nil means time.Now. For tests.
	Now func() time.Time
}

// Policy decides. It is safe for concurrent use.
type Policy struct {
	cfg  Config
	self uint32
	log  *slog.Logger
	lim  logging.Limiter

	mu    sync.Mutex
	cache map[uint32]member
	group groupEntry // AdminGroup's ID, looked up at most once per MemberTTL
}

type groupEntry struct {
	gid  string
	note string // why it is unknown, when it is
	at   time.Time
}

type member struct {
	ok  bool
	at  time.Time
	err error
}

// New returns a Policy.
func New(cfg Config) *Policy {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Groups == nil {
		cfg.Groups = userGroups
	}
	if cfg.GroupID == nil {
		cfg.GroupID = func(name string) (string, error) {
			g, err := user.LookupGroup(name)
			if err != nil {
				return "", err
			}
			return g.Gid, nil
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Policy{cfg: cfg, self: uint32(os.Geteuid()), log: cfg.Logger,
		cache: make(map[uint32]member)}
}

func userGroups(uid uint32) ([]string, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil, err
	}
	return u.GroupIds()
}

// Refusal is a refused action; its message says in one line who may.
type Refusal struct {
	Action string
	UID    uint32
	Who    string // "root and the members of group "diskd"", ...
	Note   string // why membership could not be checked, if so
}

func (r *Refusal) Error() string {
	s := fmt.Sprintf("%s is for %s (you are uid %d)", r.Action, r.Who, r.UID)
	if r.Note != "" {
		s += "; " + r.Note
	}
	return s
}

// ErrRefused matches every *Refusal with errors.Is.
var ErrRefused = errors.New("not allowed")

// Is makes errors.Is(err, ErrRefused) hold for a refusal.
func (r *Refusal) Is(target error) bool { return target == ErrRefused }

// Check returns nil when c may take action, else a *Refusal. Admin
// actions' decisions are logged, at most one line per kind (action,
// outcome, transport) every 10 s, with a count of the lines held back.
func (p *Policy) Check(c Caller, action string) error {
	if !IsAdminAction(action) {
		return nil
	}
	ok, note := p.isAdmin(c)
	outcome := "allowed"
	var err error
	if !ok {
		outcome = "refused"
		err = &Refusal{Action: action, UID: c.UID, Who: p.whoMay(), Note: note}
	}
	if allow, held := p.lim.Allow(outcome+" "+action+" "+c.Via, p.cfg.Now()); allow {
		attrs := []slog.Attr{slog.String("action", action), slog.String("via", c.Via),
			slog.String("client", c.Who), slog.Uint64("uid", uint64(c.UID))}
		if held > 0 {
			attrs = append(attrs, slog.Int("similar_not_logged", held))
		}
		if ok {
			p.log.LogAttrs(context.Background(), slog.LevelInfo, "allowed an admin action", attrs...)
		} else {
			p.log.LogAttrs(context.Background(), slog.LevelWarn, "refused an admin action", append(attrs, slog.String("reason", err.Error()))...)
		}
	}
	return err
}

// whoMay says who may take admin actions, for refusals.
func (p *Policy) whoMay() string {
	who := "root"
	if p.self != 0 {
		who = fmt.Sprintf("root, uid %d (the daemon's user)", p.self)
	}
	if p.cfg.AdminGroup == "" {
		return who + " only"
	}
	return fmt.Sprintf("%s and the members of group %q", who, p.cfg.AdminGroup)
}

// adminGID returns the admin group's ID, or a note saying why it is
// unknown; either is kept for MemberTTL, so a flood of refused requests
// does not reread /etc/group for each.
func (p *Policy) adminGID(now time.Time) (gid, note string) {
	p.mu.Lock()
	g := p.group
	p.mu.Unlock()
	if !g.at.IsZero() && now.Sub(g.at) < MemberTTL {
		return g.gid, g.note
	}
	g = groupEntry{at: now}
	var err error
	if g.gid, err = p.cfg.GroupID(p.cfg.AdminGroup); err != nil {
		var unknown user.UnknownGroupError
		if errors.As(err, &unknown) {
			g.note = fmt.Sprintf("group %q does not exist on this machine", p.cfg.AdminGroup)
		} else {
			g.note = fmt.Sprintf("cannot read group %q: %v", p.cfg.AdminGroup, err)
		}
	}
	p.mu.Lock()
	p.group = g
	p.mu.Unlock()
	return g.gid, g.note
}

// isAdmin reports whether c is root, the daemon's user or in the admin
// group; note says why membership is unknown when it could not be read.
func (p *Policy) isAdmin(c Caller) (ok bool, note string) {
	if c.UID == 0 || c.UID == p.self {
		return true, ""
	}
	if p.cfg.AdminGroup == "" {
		return false, ""
	}
	now := p.cfg.Now()
	gid, note := p.adminGID(now)
	if note != "" {
		return false, note
	}
	if c.HasGID && strconv.FormatUint(uint64(c.GID), 10) == gid {
		return true, ""
	}
	p.mu.Lock()
	m, hit := p.cache[c.UID]
	p.mu.Unlock()
	if !hit || now.Sub(m.at) >= MemberTTL {
		groups, err := p.cfg.Groups(c.UID)
		m = member{ok: slices.Contains(groups, gid), at: now}
		var unknown user.UnknownUserIdError
		if err != nil && !errors.As(err, &unknown) {
			m.err = err // a user with no passwd entry is simply not a member
		}
		p.mu.Lock()
		if len(p.cache) >= maxCached {
			clear(p.cache)
		}
		p.cache[c.UID] = m
		p.mu.Unlock()
	}
	if m.err != nil {
		return false, fmt.Sprintf("cannot read uid %d's groups: %v", c.UID, m.err)
	}
	return m.ok, ""
}
