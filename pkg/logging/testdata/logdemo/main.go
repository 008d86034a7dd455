// Command logdemo logs a fixed set of records through logging.New on
// stderr. logging's tests build it with go-systemd's journal socket pointed
// at a fake journald and check what arrives there, or on stderr.
package main

import (
	"errors"
	"log/slog"
	"os"

	"github.com/diskd/diskd/pkg/logging"
)

func main() {
	log := logging.New(os.Stderr, slog.LevelInfo).With("component", "scanner")
	log.Debug("dropped below the level")
	log.Info("probed", "device", "/dev/loop3", "node", "n1", "size", 1<<20)
	log.WithGroup("peer").Warn("late announce", "addr", "10.99.0.2", "delay_ms", 1500)
	log.Error("blkid failed", "err", errors.New("exit status 4"), "stderr", "line one\nline two")
}
