package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/diskd/diskd/pkg/wire"
)

// keygen is `diskd keygen [--force] [--id N] PATH`: it writes a new key
// file for the peer network (see wire.ParseKeys), mode 0600 and owned by
// whoever runs it (root, for /etc/diskd/network.key), and never replaces
// an existing file unless --force is given. The file appears whole or not
// at all: it is written beside PATH and then linked (or, with --force,
// renamed) into place.
func keygen(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("diskd keygen", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	force := fs.Bool("force", false, "replace PATH if it exists")
	id := fs.Uint8("id", 1, "the key's ID (1-255); a second key for rotation takes another")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: diskd keygen [--force] [--id N] PATH\n\nWrites a new shared key for the peer network (key_file), mode 0600.\n\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	path := fs.Arg(0)
	text, err := wire.NewKeyFile(*id, time.Now())
	if err == nil {
		err = writeKeyFile(path, text, *force)
	}
	if err != nil {
		fmt.Fprintln(stderr, "diskd keygen:", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote a new key (ID %d) to %s, mode 0600\n"+
		"copy it to every peer (same path, mode 0600) and set key_file = %q in /etc/diskd/diskd.conf\n", *id, path, path)
	return 0
}

func writeKeyFile(path string, text []byte, force bool) error {
	if _, err := os.Lstat(path); err == nil && !force {
		return fmt.Errorf("%s exists; not replacing it (--force does)", path)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// Parse what we wrote, so the daemon will too.
	if _, err := wire.ParseKeys(bytes.NewReader(text)); err != nil {
		return fmt.Errorf("generated key does not parse: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".keygen-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	// CreateTemp makes it 0600 whatever the umask; say so anyway, as the
	// mode is the point.
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(text)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if force {
		err = os.Rename(tmp.Name(), path)
	} else {
		// link fails if path appeared meanwhile: no race replaces a key.
		err = os.Link(tmp.Name(), path)
	}
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; not replacing it (--force does)", path)
	}
	return err
}
