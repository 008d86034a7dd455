package test

import (
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/testutil"
)

// TestLocalUsers: the local-user policy and session bounds of issue 10,
// through the real daemon and diskctl, with real users: nobody (uid
// 65534) and a temporary user in a temporary admin group. One daemon, on
// the socket and on a private system-like bus; its network is a namespace
// of its own, so its announces go nowhere.
func TestLocalUsers(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "runuser")
	_, diskctl := testutil.Binaries(t)
	admin := testutil.NewTempUser(t)
	bus := startPolicyBus(t)
	sock := publicSocket(t)
	d := testutil.StartDaemon(t, testutil.DaemonOptions{StateDir: filledState(t, 8000), Socket: sock, Args: []string{
		"--devices", "/dev/nothing", "--dbus", bus.Address, "--admin-group", admin.Group,
		// No uevents: the only full scans are the ones asked for (the
		// periodic one is 5 min away), so the test can count them.
		"--uevents=false", "--session-write-timeout", "1s"}})
	waitBusName(t, bus)
	// ctlAs runs the real diskctl as user (through runuser, as a person
	// would), returning its output and exit code.
	ctlAs := func(user string, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command("runuser", append([]string{"-u", user, "--", diskctl, "--socket", sock}, args...)...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatalf("runuser: %v", err)
		}
		return string(out), 0
	}
	busAs := func(user, method string) (string, error) {
		out, err := exec.Command("runuser", "-u", user, "--", "busctl", "--address="+bus.Address, "call", contract.BusName,
			contract.ManagerPath, contract.ManagerInterface, method, "a{sv}", "0").CombinedOutput()
		return string(out), err
	}
	status := func() api.Status {
		t.Helper()
		var s api.Status
		if err := json.Unmarshal([]byte(d.MustCtl("status", "--json")), &s); err != nil || s.Network == nil {
			t.Fatalf("status: %v", err)
		}
		return s
	}
	whoMay := `is for root and the members of group "` + admin.Group + `" (you are uid 65534)`

	t.Run("nobody reads but may not act", func(t *testing.T) {
		before := status()
		if out, code := ctlAs("nobody", "list", "--json"); code != 0 || !strings.Contains(out, "LABEL-7999") {
			t.Errorf("nobody's list: exit %d %.200s", code, out)
		}
		for _, cmd := range []string{"refresh", "announce", "ping"} {
			out, code := ctlAs("nobody", cmd)
			if code != 1 || strings.TrimSpace(out) != "diskctl: "+cmd+" "+whoMay {
				t.Errorf("nobody's %s: exit %d %q; want exit 1 and %q", cmd, code, out, "diskctl: "+cmd+" "+whoMay)
			}
		}
		for _, m := range []string{"Refresh", "Ping"} {
			if out, err := busAs("nobody", m); err == nil || !strings.Contains(out, strings.ToLower(m)+" "+whoMay) {
				t.Errorf("nobody's D-Bus %s: %v %s", m, err, out)
			}
		}
		after := status()
		if after.Scan.FullScans != before.Scan.FullScans || after.Network.Counters["announces_sent"] != before.Network.Counters["announces_sent"] {
			t.Errorf("nobody's refused requests ran: full scans %d → %d, announces %d → %d", before.Scan.FullScans, after.Scan.FullScans,
				before.Network.Counters["announces_sent"], after.Network.Counters["announces_sent"])
		}
	})

	t.Run("the admin group acts", func(t *testing.T) {
		before := status().Scan.FullScans
		for _, cmd := range []string{"refresh", "announce", "ping"} {
			if out, code := ctlAs(admin.Name, cmd); code != 0 {
				t.Errorf("%s (in %s) %s: exit %d %s", admin.Name, admin.Group, cmd, code, out)
			}
		}
		for _, m := range []string{"Refresh", "Ping"} {
			if out, err := busAs(admin.Name, m); err != nil {
				t.Errorf("%s's D-Bus %s: %v %s", admin.Name, m, err, out)
			}
		}
		if after := status().Scan.FullScans; after == before {
			t.Errorf("the admin's refreshes ran no full scan (%d before and after)", before)
		}
	})

	t.Run("decisions are logged", func(t *testing.T) {
		lines := strings.Split(d.Log(), "\n")
		for _, want := range [][]string{
			{`msg="refused an admin action"`, "component=authz action=refresh via=socket", "uid=65534"},
			{`msg="refused an admin action"`, "component=authz action=refresh via=D-Bus", "uid=65534"},
			{`msg="allowed an admin action"`, "component=authz action=announce via=socket"},
		} {
			if !slices.ContainsFunc(lines, func(l string) bool {
				return !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(l, w) })
			}) {
				t.Errorf("no log line has all of %q", want)
			}
		}
	})

	t.Run("1100 idle sessions of nobody leave room for others", func(t *testing.T) {
		h := startHog(t, nobodyUID, nogroupGID, sock, false, 1100)
		defer h.stop()
		if h.Accepted != 64 || h.Refused != 1036 || !strings.Contains(h.First, "too many sessions for uid 65534 (64 at once)") {
			t.Errorf("nobody's 1100 sessions: %d accepted, %d refused (%s); want 64 and the per-user refusal", h.Accepted, h.Refused, h.First)
		}
		if out, code := ctlAs("root", "list", "--json"); code != 0 {
			t.Errorf("root's list beside nobody's sessions: exit %d %.200s", code, out)
		}
		if out, code := ctlAs(admin.Name, "status"); code != 0 {
			t.Errorf("another user's status beside nobody's sessions: exit %d %.200s", code, out)
		}
	})

	t.Run("a client that never reads is disconnected", func(t *testing.T) {
		h := startHog(t, nobodyUID, nogroupGID, sock, true, 10)
		defer h.stop()
		if h.Accepted != 10 {
			t.Fatalf("%d of 10 sessions accepted (%s)", h.Accepted, h.First)
		}
		// Root is served while they are stuck.
		if out, code := ctlAs("root", "list", "--json"); code != 0 {
			t.Errorf("root's list beside stuck sessions: exit %d %.200s", code, out)
		}
		testutil.Eventually(t, 60*time.Second, "the never-reading sessions to be closed", func() bool { return h.Closed() == 10 })
		if !strings.Contains(d.Log(), "closing session: the client did not read its reply") {
			t.Error("the disconnection is not logged")
		}
	})

	t.Run("requested announces are paced", func(t *testing.T) {
		sent := func() uint64 { return status().Network.Counters["announces_sent"] }
		before := sent()
		r := flood(t, 0, 0, sock, "announce", 3*time.Second)
		if r["first-reply"] != "announced" || atof(r["sent"]) < 100 {
			t.Fatalf("root's announce flood: %v", r)
		}
		// Far under a minute: at most announces_per_minute (10) go out,
		// however many were asked for.
		testutil.Eventually(t, 10*time.Second, "a requested announce sent", func() bool { return sent() > before })
		if n := sent() - before; n > 10 {
			t.Errorf("%s requests sent %d announces; the pacer allows 10 a minute", r["sent"], n)
		}
	})
}
