package api

import (
	"fmt"
	"io"
)

// WriteMounted says what `mount` did, for a person.
func WriteMounted(w io.Writer, r MountResult) {
	mode := "read-only"
	if r.RW {
		mode = "read-write"
	}
	fmt.Fprintf(w, "%s mounted %s on %s at %s\n", Escape(r.Disk), mode, Escape(r.Host), Escape(r.Path))
}

// WriteUnmounted says what `unmount` did, for a person.
func WriteUnmounted(w io.Writer, r MountResult) {
	fmt.Fprintf(w, "%s unmounted on %s (was at %s)\n", Escape(r.Disk), Escape(r.Host), Escape(r.Path))
}
