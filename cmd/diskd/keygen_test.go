package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/diskd/diskd/pkg/wire"
)

// TestKeygen: the file is 0600 whatever the umask, owned by whoever ran
// it, parses as a key file (LoadKeyFile also checks the mode), and is not
// replaced without --force.
func TestKeygen(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "network.key")
	run := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := keygen(args, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	if code, out := run(path); code != 0 || !strings.Contains(out, "wrote a new key (ID 1) to "+path) {
		t.Fatalf("keygen: %d %s", code, out)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Sys().(*syscall.Stat_t).Uid != uint32(os.Geteuid()) {
		t.Errorf("mode %04o uid %d; want 0600 and uid %d", st.Mode().Perm(), st.Sys().(*syscall.Stat_t).Uid, os.Geteuid())
	}
	kr, err := wire.LoadKeyFile(path)
	if err != nil {
		t.Fatalf("generated file does not load: %v", err)
	}
	if ids := kr.IDs(); len(ids) != 1 || ids[0] != 1 {
		t.Errorf("key IDs %v, want [1]", ids)
	}
	first, _ := os.ReadFile(path)

	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"no overwrite", []string{path}, 1, path + " exists; not replacing it (--force does)"},
		{"no overwrite, other ID", []string{"--id", "2", path}, 1, "exists"},
		{"ID 0", []string{"--id", "0", filepath.Join(dir, "k0")}, 1, "key ID 0: want 1-255"},
		{"no path", nil, 2, "Usage: diskd keygen"},
		{"missing directory", []string{filepath.Join(dir, "nope", "k")}, 1, "no such file or directory"},
	} {
		code, out := run(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) {
			t.Errorf("%s: %d %q; want %d and %q", tc.name, code, out, tc.code, tc.out)
		}
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, first) {
		t.Error("the key changed without --force")
	}
	if code, out := run("--force", "--id", "7", path); code != 0 {
		t.Fatalf("keygen --force: %d %s", code, out)
	}
	kr, err = wire.LoadKeyFile(path)
	if err != nil || kr.IDs()[0] != 7 {
		t.Errorf("after --force: %v %v", kr.IDs(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".keygen-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
