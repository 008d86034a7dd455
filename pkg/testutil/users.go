package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// tempUsers numbers the users of one test process, for unique names.
var tempUsers atomic.Int64

// TempUser is a system user made for one test, with a group of its own
// that it belongs to as a supplementary group (not its primary one), as
// an administrator added with `gpasswd -a` would be.
type TempUser struct {
	Name, Group string
	UID, GID    uint32 // GID is the primary group's; Group's is GroupID
	GroupID     uint32
}

// NewTempUser runs groupadd and useradd, and removes both at cleanup.
// Needs root.
func NewTempUser(t testing.TB) TempUser {
	t.Helper()
	RequiresRoot(t)
	RequiresTool(t, "groupadd", "groupdel", "useradd", "userdel")
	base := fmt.Sprintf("dkdt%d", int64(os.Getpid()%100000)+tempUsers.Add(1)*100000)
	u := TempUser{Name: base + "u", Group: base}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	run("groupadd", "--system", u.Group)
	t.Cleanup(func() { exec.Command("groupdel", u.Group).Run() })
	run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", "--groups", u.Group, u.Name)
	t.Cleanup(func() { exec.Command("userdel", u.Name).Run() })
	pw, err := user.Lookup(u.Name)
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroup(u.Group)
	if err != nil {
		t.Fatal(err)
	}
	u.UID, u.GID, u.GroupID = atou32(pw.Uid), atou32(pw.Gid), atou32(g.Gid)
	return u
}

func atou32(s string) uint32 {
	n, _ := strconv.ParseUint(s, 10, 32)
	return uint32(n)
}
