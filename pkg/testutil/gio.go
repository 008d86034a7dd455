package testutil

import (
	"bufio"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

//go:embed gio-clients.py
var gioClientsPy []byte

// GioState is what a D-Bus object manager holds: object path, then
// interface, then property, then the value in GVariant text format with
// its type ("uint64 5", "true", "@ay [0x2f, 0x0]").
type GioState map[string]map[string]map[string]string

// GioDump is the answer to GioClients.Dump.
type GioDump struct {
	Clients []GioState // each client's proxies
	// Before and After are fresh GetManagedObjects replies taken before
	// the clients were read and after.
	Before, After GioState
}

// GioClients is a python3-gi process holding Gio DBusObjectManagerClients
// for org.diskd.Diskd1, each on its own bus connection, as GNOME
// applications hold them. It is stopped, by PID, when the test ends.
type GioClients struct {
	t   testing.TB
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// gioPython finds a python3 that has the Gio bindings (python3-gi and
// gir1.2-glib-2.0): /usr/bin/python3 first, since a python3 earlier in
// PATH (pyenv, a venv) usually lacks the system's packages.
func gioPython(t testing.TB) string {
	t.Helper()
	var tried []string
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		path, err := exec.LookPath(p)
		if err != nil {
			continue
		}
		tried = append(tried, path)
		check := exec.Command(path, "-c", "import gi; gi.require_version('Gio', '2.0'); from gi.repository import Gio")
		if check.Run() == nil {
			return path
		}
	}
	msg := fmt.Sprintf("no python3 with the Gio bindings (tried %s); python3-gi and gir1.2-glib-2.0 are in dbus/ci-packages.txt", strings.Join(tried, ", "))
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip("skipping: " + msg)
	return ""
}

// StartGioClients starts the process for the bus at address, with no
// clients yet (see New).
func StartGioClients(t testing.TB, address string) *GioClients {
	t.Helper()
	py := gioPython(t)
	script := filepath.Join(t.TempDir(), "gio-clients.py")
	if err := os.WriteFile(script, gioClientsPy, 0o644); err != nil {
		t.Fatal(err)
	}
	g := &GioClients{t: t, cmd: exec.Command(py, script, address)}
	var err error
	if g.in, err = g.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := g.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	g.out = bufio.NewReaderSize(out, 1<<20)
	var stderr strings.Builder
	g.cmd.Stderr = &stderr
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.in.Close() // it exits at end of input
		done := make(chan struct{})
		go func() { g.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			g.cmd.Process.Kill()
			<-done
		}
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("gio-clients.py stderr:\n%s", stderr.String())
		}
	})
	return g
}

// do sends one command and returns its one-line answer.
func (g *GioClients) do(cmd string) string {
	g.t.Helper()
	if _, err := io.WriteString(g.in, cmd+"\n"); err != nil {
		g.t.Fatalf("gio-clients %s: %v", cmd, err)
	}
	line, err := g.out.ReadString('\n')
	if err != nil {
		g.t.Fatalf("gio-clients %s: %v", cmd, err)
	}
	line = strings.TrimSuffix(line, "\n")
	if strings.HasPrefix(line, "error: ") {
		g.t.Fatalf("gio-clients %s: %s", cmd, line)
	}
	return line
}

// New creates one more client (GDBusObjectManagerClient.new_sync: it
// subscribes to the signals, then calls GetManagedObjects).
func (g *GioClients) New() {
	g.t.Helper()
	g.do("new")
}

// Dump reads every client's state, each after a round trip to the daemon
// (so it has applied every signal sent before the Before reply).
func (g *GioClients) Dump() GioDump {
	g.t.Helper()
	line := g.do("dump")
	var d GioDump
	if err := json.Unmarshal([]byte(line), &d); err != nil {
		g.t.Fatalf("gio-clients dump: %v: %.300s", err, line)
	}
	return d
}

// Diff lists where s and other differ, leaving out the properties ignore
// names (nil ignores none); empty when they agree.
func (s GioState) Diff(other GioState, ignore func(iface, prop string) bool) []string {
	var out []string
	keys := func(m map[string]map[string]map[string]string) []string {
		ks := make([]string, 0, len(m))
		for k := range m {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		return ks
	}
	for _, p := range keys(other) {
		if _, ok := s[p]; !ok {
			out = append(out, p+": missing")
		}
	}
	for _, p := range keys(s) {
		o, ok := other[p]
		if !ok {
			out = append(out, p+": extra")
			continue
		}
		for in := range o {
			if _, ok := s[p][in]; !ok {
				out = append(out, p+" "+in+": missing")
			}
		}
		for in, props := range s[p] {
			op, ok := o[in]
			if !ok {
				out = append(out, p+" "+in+": extra")
				continue
			}
			names := map[string]bool{}
			for k := range props {
				names[k] = true
			}
			for k := range op {
				names[k] = true
			}
			for k := range names {
				if ignore != nil && ignore(in, k) {
					continue
				}
				if v, w := props[k], op[k]; v != w {
					out = append(out, fmt.Sprintf("%s %s.%s: %q, not %q", p, in, k, v, w))
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// Settled reports whether the daemon's state, but for what ignore names,
// stayed the same while the dump was taken (Before equals After).
func (d GioDump) Settled(ignore func(iface, prop string) bool) bool {
	return len(d.Before.Diff(d.After, ignore)) == 0
}

// Check fails t unless the dump holds n clients and each holds what the
// fresh GetManagedObjects (After) returned, but for what ignore names.
func (d GioDump) Check(t testing.TB, n int, ignore func(iface, prop string) bool) {
	t.Helper()
	if len(d.Clients) != n {
		t.Fatalf("%d Gio clients, want %d", len(d.Clients), n)
	}
	for i, c := range d.Clients {
		if diff := c.Diff(d.After, ignore); len(diff) > 0 {
			t.Errorf("Gio client %d differs from GetManagedObjects:\n%s", i, strings.Join(diff, "\n"))
		}
	}
}
