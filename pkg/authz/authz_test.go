package authz

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/testutil"
)

// fakeGroups is /etc/group for the logic tests: gid 990 is "diskd".
type fakeGroups struct {
	members map[uint32][]string
	lookups int
}

func (f *fakeGroups) groups(uid uint32) ([]string, error) {
	f.lookups++
	g, ok := f.members[uid]
	if !ok {
		return nil, user.UnknownUserIdError(int(uid))
	}
	return g, nil
}

func groupID(name string) (string, error) {
	if name == "diskd" {
		return "990", nil
	}
	return "", user.UnknownGroupError(name)
}

func TestCheck(t *testing.T) {
	self := uint32(os.Geteuid())
	f := &fakeGroups{members: map[uint32][]string{
		1000: {"1000", "990"}, // alice: supplementary member
		1001: {"1001"},        // bob: not a member
		1002: {"990"},         // carol: diskd is her primary group
	}}
	now := time.Unix(1000, 0)
	p := New(Config{AdminGroup: "diskd", Groups: f.groups, GroupID: groupID, Now: func() time.Time { return now }})
	for _, tc := range []struct {
		name   string
		c      Caller
		action string
		want   string // "" allowed, else the refusal's message
	}{
		{"everyone reads", Caller{UID: 1001}, "list", ""},
		{"status too", Caller{UID: 65534}, "status", ""},
		{"root acts", Caller{UID: 0}, "refresh", ""},
		{"the daemon's user acts", Caller{UID: self}, "ping", ""},
		{"a supplementary member", Caller{UID: 1000}, "announce", ""},
		{"a primary member", Caller{UID: 1002}, "refresh", ""},
		{"a process running with the group", Caller{UID: 1001, GID: 990, HasGID: true}, "refresh", ""},
		{"a non-member", Caller{UID: 1001, GID: 1001, HasGID: true}, "refresh",
			`refresh is for root and the members of group "diskd" (you are uid 1001)`},
		{"a uid without an account", Caller{UID: 4242}, "ping",
			`ping is for root and the members of group "diskd" (you are uid 4242)`},
	} {
		if self != 0 && strings.HasPrefix(tc.want, tc.action+" is for root and") {
			tc.want = strings.Replace(tc.want, "root and", "root, uid "+strconv.Itoa(int(self))+" (the daemon's user) and", 1)
		}
		err := p.Check(tc.c, tc.action)
		got := ""
		if err != nil {
			got = err.Error()
			if !errors.Is(err, ErrRefused) {
				t.Errorf("%s: %v is not ErrRefused", tc.name, err)
			}
		}
		if got != tc.want {
			t.Errorf("%s: Check = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestMembershipCache: a lookup of the group and of the uid's groups per
// MemberTTL, however often the uid asks; a change of /etc/group shows
// after at most MemberTTL.
func TestMembershipCache(t *testing.T) {
	f := &fakeGroups{members: map[uint32][]string{1001: {"1001"}}}
	now := time.Unix(1000, 0)
	groupLookups := 0
	p := New(Config{AdminGroup: "diskd", Groups: f.groups, Now: func() time.Time { return now },
		GroupID: func(name string) (string, error) { groupLookups++; return groupID(name) }})
	for range 1000 {
		if p.Check(Caller{UID: 1001, GID: 1001, HasGID: true}, "refresh") == nil {
			t.Fatal("non-member allowed")
		}
	}
	if f.lookups != 1 || groupLookups != 1 {
		t.Errorf("%d membership and %d group lookups for 1000 requests within the TTL, want 1 each", f.lookups, groupLookups)
	}
	f.members[1001] = []string{"1001", "990"} // gpasswd -a
	now = now.Add(MemberTTL)
	if err := p.Check(Caller{UID: 1001}, "refresh"); err != nil {
		t.Errorf("member after the TTL refused: %v", err)
	}
}

// TestNoGroup: without an admin group (or with one the machine lacks),
// only root acts, and the refusal says so.
func TestNoGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the messages name the daemon's own user when not root")
	}
	for _, tc := range []struct{ group, want string }{
		{"", "refresh is for root only (you are uid 1001)"},
		{"nosuchgroup", `refresh is for root and the members of group "nosuchgroup" (you are uid 1001); group "nosuchgroup" does not exist on this machine`},
	} {
		p := New(Config{AdminGroup: tc.group, GroupID: groupID, Groups: (&fakeGroups{}).groups})
		if err := p.Check(Caller{UID: 1001}, "refresh"); err == nil || err.Error() != tc.want {
			t.Errorf("group %q: %v, want %q", tc.group, err, tc.want)
		}
	}
}

// TestLogRateLimited: a user repeating a refused action gets one log line
// per kind per interval, then one counting what was held back.
func TestLogRateLimited(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	p := New(Config{AdminGroup: "diskd", Groups: (&fakeGroups{}).groups, GroupID: groupID,
		Logger: slog.New(slog.NewTextHandler(&buf, nil)), Now: func() time.Time { return now }})
	for range 500 {
		p.Check(Caller{UID: 1001, Via: "socket"}, "announce")
		p.Check(Caller{UID: 1001, Via: "D-Bus"}, "announce")
	}
	if n := strings.Count(buf.String(), "refused an admin action"); n != 2 {
		t.Errorf("%d lines for 1000 refusals over two transports, want 2:\n%s", n, buf.String())
	}
	now = now.Add(11 * time.Second)
	p.Check(Caller{UID: 1001, Via: "socket"}, "announce")
	if !strings.Contains(buf.String(), "similar_not_logged=499") {
		t.Errorf("held-back count not logged:\n%s", buf.String())
	}
}

// TestRealGroups: membership read from the real /etc/group through
// os/user, with a temporary group and user made for the test.
func TestRealGroups(t *testing.T) {
	u := testutil.NewTempUser(t)
	p := New(Config{AdminGroup: u.Group})
	if err := p.Check(Caller{UID: u.UID, GID: u.GID, HasGID: true}, "refresh"); err != nil {
		t.Errorf("a member of %s (supplementary) refused: %v", u.Group, err)
	}
	if err := p.Check(Caller{UID: 65534, GID: 65534, HasGID: true}, "refresh"); err == nil {
		t.Error("nobody allowed")
	}
}
