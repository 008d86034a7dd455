package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/diskd/diskd/pkg/disk"
)

// NodeIDFile is the name of the node identity file in the state directory.
const NodeIDFile = "node-id"

// LoadOrCreateNodeID returns the node ID kept in dir, creating a random one
// on first start. It is not derived from /etc/machine-id: machines cloned
// from one image share that, and two nodes must never share an ID.
func LoadOrCreateNodeID(dir string) (disk.NodeID, error) {
	p := filepath.Join(dir, NodeIDFile)
	b, err := os.ReadFile(p)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if ValidNodeID(id) {
			return disk.NodeID(id), nil
		}
		return "", fmt.Errorf("node identity %s is malformed (want 32 hex digits); remove it to create a new one", p)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read node identity: %w", err)
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("create node identity: %w", err)
	}
	id := hex.EncodeToString(raw[:])
	if err := WriteFileAtomic(p, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("save node identity: %w", err)
	}
	return disk.NodeID(id), nil
}

// ValidNodeID reports whether s has the form of a node ID.
func ValidNodeID(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// WriteFileAtomic replaces path with data so that a crash leaves either the
// old or the new content: temp file, fsync, rename, fsync of the directory.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
