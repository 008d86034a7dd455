package testutil

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"
)

// TestDBusPolicyAndRestart: the private bus behaves like a system bus
// (nobody may own names unless a policy file says so, every user may
// connect), picks up policy files, and restarts at the same address.
func TestDBusPolicyAndRestart(t *testing.T) {
	RequiresRoot(t)
	RequiresTool(t, "dbus-daemon", "dbus-send", "busctl", "runuser")
	b := StartDBus(t)
	c, err := dbus.Connect(b.Address)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.RequestName("org.example.Test1", dbus.NameFlagDoNotQueue); err == nil || !strings.Contains(err.Error(), "not allowed to own") {
		t.Errorf("owning a name without a policy: %v", err)
	}
	b.WritePolicy("test.conf", `<busconfig><policy user="root"><allow own="org.example.Test1"/></policy></busconfig>`)
	if r, err := c.RequestName("org.example.Test1", dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Errorf("owning a name with a policy: %v %v", r, err)
	}
	out, err := exec.Command("runuser", "-u", "nobody", "--", "busctl", "--address="+b.Address, "list", "--no-pager").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "org.example.Test1") {
		t.Errorf("nobody listing names: %v %s", err, out)
	}
	c.Close()

	b.Stop()
	if _, err := dbus.Connect(b.Address); err == nil {
		t.Fatal("connected to a stopped bus")
	}
	b.Start()
	c, err = dbus.Connect(b.Address)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	c.Close()
}
