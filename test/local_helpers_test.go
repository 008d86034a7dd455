package test

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/testutil"
)

// Helpers for the local-user tests and figures (issue 10): a socket other
// users can reach, and sessionhog (testdata/sessionhog) run as them.

const nobodyUID, nogroupGID = 65534, 65534

// publicSocket returns a socket path in a fresh root-owned 0755 directory,
// so that users other than root can connect (t.TempDir is 0700).
func publicSocket(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "diskd-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "diskd.sock")
}

var hogBuild struct {
	once sync.Once
	path string
	err  error
}

// sessionhog builds testdata/sessionhog once into a directory every user
// may read.
func sessionhog(t testing.TB) string {
	t.Helper()
	hogBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "diskd-hog-")
		if err == nil {
			err = os.Chmod(dir, 0o755)
		}
		if err != nil {
			hogBuild.err = err
			return
		}
		hogBuild.path = filepath.Join(dir, "sessionhog")
		cmd := exec.Command("go", "build", "-o", hogBuild.path, "./testdata/sessionhog")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			hogBuild.err = &cmdError{err, string(out)}
		}
	})
	if hogBuild.err != nil {
		t.Fatal(hogBuild.err)
	}
	return hogBuild.path
}

// asUser makes cmd run as uid/gid with no supplementary groups, or with
// groups when given.
func asUser(cmd *exec.Cmd, uid, gid uint32, groups ...uint32) *exec.Cmd {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	return cmd
}

// hog is a running `sessionhog SOCKET hold|stuck N`.
type hog struct {
	t        testing.TB
	cmd      *exec.Cmd
	in       io.WriteCloser
	out      *bufio.Scanner
	Accepted int
	Refused  int
	First    string // the first refusal, as the daemon wrote it
}

// startHog opens n sessions as uid/gid and returns once they are open (or
// refused). stuck sessions send "list" and never read.
func startHog(t testing.TB, uid, gid uint32, sock string, stuck bool, n int) *hog {
	t.Helper()
	mode := "hold"
	if stuck {
		mode = "stuck"
	}
	h := &hog{t: t, cmd: asUser(exec.Command(sessionhog(t), sock, mode, strconv.Itoa(n)), uid, gid)}
	h.cmd.Stderr = os.Stderr
	var err error
	if h.in, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h.out = bufio.NewScanner(out)
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.stop)
	kv := h.line()
	h.Accepted, _ = strconv.Atoi(kv["accepted"])
	h.Refused, _ = strconv.Atoi(kv["refused"])
	h.First = kv["first-refusal"]
	return h
}

// line reads the hog's next report as key=value pairs (the last value
// runs to the end of the line).
func (h *hog) line() map[string]string {
	h.t.Helper()
	if !h.out.Scan() {
		h.t.Fatalf("sessionhog ended: %v", h.out.Err())
	}
	kv := map[string]string{}
	rest := h.out.Text()
	for rest != "" {
		k, v, _ := strings.Cut(rest, "=")
		if k == "first-refusal" {
			kv[k] = v
			break
		}
		v, rest, _ = strings.Cut(v, " ")
		kv[k] = v
	}
	return kv
}

// Closed asks how many of the accepted sessions the daemon has closed.
func (h *hog) Closed() int {
	h.t.Helper()
	if _, err := io.WriteString(h.in, "?\n"); err != nil {
		h.t.Fatal(err)
	}
	n, _ := strconv.Atoi(h.line()["closed"])
	return n
}

func (h *hog) stop() {
	if h.cmd.ProcessState != nil {
		return
	}
	h.in.Close()
	done := make(chan struct{})
	go func() { h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		h.cmd.Process.Kill()
		<-done
	}
}

// flood runs `sessionhog SOCKET flood CMD D` as uid/gid and returns its
// report (sent, replies, first-reply).
func flood(t testing.TB, uid, gid uint32, sock, cmd string, d time.Duration) map[string]string {
	t.Helper()
	c := asUser(exec.Command(sessionhog(t), sock, "flood", cmd, d.String()), uid, gid)
	c.Stderr = os.Stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("sessionhog flood: %v", err)
	}
	kv := map[string]string{}
	rest := strings.TrimSpace(string(out))
	for rest != "" {
		k, v, _ := strings.Cut(rest, "=")
		if k == "first-reply" {
			kv[k] = v
			break
		}
		v, rest, _ = strings.Cut(v, " ")
		kv[k] = v
	}
	return kv
}

// filledState returns a state directory whose table holds n disks of
// made-up peers, so that a list reply is larger than socket buffers.
func filledState(t testing.TB, n int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	id, err := store.LoadOrCreateNodeID(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(store.Options{Local: disk.Node{ID: id, Name: "local"}, MaxPeers: 100})
	testutil.FillPeers(st, n)
	db, _, err := store.OpenDB(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := st.Flush(db); err != nil {
		t.Fatal(err)
	}
	return dir
}
