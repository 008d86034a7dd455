package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/diskd/diskd/pkg/testutil"
)

// TestListJSONIntoPipes: `diskctl list --json` passes a list larger than
// any buffer on the way into a pipe and into a file, and the bytes are
// the same; a reader that leaves early
// ends diskctl by SIGPIPE, as any write of a Go program to a broken
// standard output does (`diskctl list --json | head`).
func TestListJSONIntoPipes(t *testing.T) {
	testutil.RequiresRoot(t)
	_, diskctl := testutil.Binaries(t)
	d := testutil.StartDaemon(t, testutil.DaemonOptions{StateDir: filledState(t, 10_000), Args: []string{"--devices", "/dev/nonexistent"}})
	args := []string{"--socket", d.Socket, "list", "--json"}

	piped, err := exec.Command(diskctl, args...).Output() // a pipe
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(t.TempDir() + "/list.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(diskctl, args...)
	cmd.Stdout = f
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	inFile, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	var ds []json.RawMessage
	if err := json.Unmarshal(piped, &ds); err != nil || len(ds) != 10_000 || !bytes.HasSuffix(piped, []byte("]\n")) {
		t.Fatalf("through a pipe: %d disks, %v, ends %q", len(ds), err, piped[max(0, len(piped)-4):])
	}
	if !bytes.Equal(piped, inFile) {
		t.Errorf("through a pipe %d bytes, into a file %d bytes: not the same", len(piped), len(inFile))
	}

	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(diskctl, args...)
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if _, err := io.ReadFull(pr, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	pr.Close() // as head does after its lines
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGPIPE {
		t.Errorf("diskctl whose reader left: %v, want killed by SIGPIPE", err)
	}
}
