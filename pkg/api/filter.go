package api

import (
	"fmt"
	"path"

	"github.com/diskd/diskd/pkg/disk"
)

// ListFilter narrows `list` on the daemon's side, so a person who wants a
// part of a large table is sent only that part. The zero value lists
// everything.
type ListFilter struct {
	Host    string // node name or ID; "" for every machine
	Present bool   // only disks attached now
	Label   string // only disks whose label matches this glob (CheckLabelGlob)
}

// MaxGlobBytes bounds a label glob. Real labels are short (ext4 16 bytes,
// a GPT partition name 36 characters), and a match costs up to the glob's
// length times the label's (256 bytes at most, as the peer protocol cuts
// them), for every disk listed: the worst glob over 100,000 of the longest
// labels is seconds of CPU (BenchmarkLabelGlobWorstCase), which is why
// labels are matched outside the table's lock.
const MaxGlobBytes = 64

// CheckLabelGlob says why glob cannot be a label filter: too long, or not
// a valid path.Match pattern.
func CheckLabelGlob(glob string) error {
	if len(glob) > MaxGlobBytes {
		return fmt.Errorf("label glob %s is longer than %d bytes", Quote(glob), MaxGlobBytes)
	}
	if _, err := path.Match(glob, ""); err != nil {
		return fmt.Errorf("label glob %s is malformed (%v); use *, ?, [a-z] and \\ to quote", Quote(glob), err)
	}
	return nil
}

// LabelMatches reports whether glob (already checked with CheckLabelGlob)
// matches label, as path.Match does ('*' does not cross '/'). A disk
// without a label matches no glob: asking for labels is asking for
// labelled disks.
func LabelMatches(glob, label string) bool {
	if label == "" {
		return false
	}
	ok, _ := path.Match(glob, label)
	return ok
}

// Keep returns the cheap part of f (host and presence) as a predicate
// over disks, with the host already resolved to node (the empty ID for
// every machine); nil when it keeps everything. The label is KeepLabel's.
func (f ListFilter) Keep(node disk.NodeID) func(*disk.Disk) bool {
	if node == "" && !f.Present {
		return nil
	}
	return func(d *disk.Disk) bool {
		return (node == "" || d.Node == node) && (!f.Present || d.Present)
	}
}

// KeepLabel returns f's label glob (already checked) as a predicate over
// labels; nil when f has none.
func (f ListFilter) KeepLabel() func(label string) bool {
	if f.Label == "" {
		return nil
	}
	return func(label string) bool { return LabelMatches(f.Label, label) }
}
