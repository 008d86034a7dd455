package api

import (
	"fmt"
	"os"
	"path/filepath"
)

// DefaultSocketPath is where the daemon listens and diskctl connects when
// neither is told otherwise: /run/diskd/diskd.sock for root,
// $XDG_RUNTIME_DIR/diskd/diskd.sock for anyone else (falling back to
// /tmp/diskd-UID when that is unset, as on a bare su session).
func DefaultSocketPath() string {
	if os.Geteuid() == 0 {
		return "/run/diskd/diskd.sock"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "diskd", "diskd.sock")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("diskd-%d", os.Geteuid()), "diskd.sock")
}
