// Package logging owns how diskd's log records leave the process. Under
// systemd, when stderr is the journal's stream (JOURNAL_STREAM names its
// device and inode), records go to journald over its native protocol with
// every slog attribute as a structured field (component → COMPONENT,
// node → NODE, device → DEVICE, …) and PRIORITY from the level, so
// `journalctl COMPONENT=peer` works. Anywhere else they are slog text on
// the given writer.
//
// The "component" attribute is set by whoever builds a component, with
// logger.With("component", NAME) on the logger it passes in (cmd/diskd's
// run does it for every component); a package never names itself, so a
// record carries one component and the wiring decides the names.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/coreos/go-systemd/v22/journal"
)

// New returns the logger diskd uses: a journal logger when w is the
// process's journal stream and journald accepts native messages, a text
// logger on w otherwise. Records below level are dropped.
func New(w io.Writer, level slog.Level) *slog.Logger {
	if isJournalStream(w) && journal.Enabled() {
		return slog.New(newJournalHandler(journal.Send, level, w))
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// isJournalStream reports whether w is a file whose device and inode match
// $JOURNAL_STREAM, i.e. systemd connected it to journald for this process
// (a child that merely inherited the variable does not match).
func isJournalStream(w io.Writer) bool {
	env := os.Getenv("JOURNAL_STREAM")
	f, ok := w.(*os.File)
	if env == "" || !ok {
		return false
	}
	var dev, ino uint64
	if _, err := fmt.Sscanf(env, "%d:%d", &dev, &ino); err != nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && uint64(st.Dev) == dev && st.Ino == ino
}

// identifier is SYSLOG_IDENTIFIER: what `journalctl -t` and the short
// output format show as the program name.
func identifier() string { return filepath.Base(os.Args[0]) }
