package api

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// MaxQuoted is how much of a caller's input an error message quotes, in
// bytes. A label, UUID, host name or option key fits; a megabyte sent to
// provoke the daemon does not come back as a megabyte of error.
const MaxQuoted = 100

// Quote is how every error message on the socket and on D-Bus quotes what
// a caller sent: in Go quotes (control characters and invalid UTF-8
// escaped, so the message stays one readable line), cut to MaxQuoted
// bytes on a character boundary, and when cut, followed by the input's
// full length: "aaaa"... (1048576 bytes).
func Quote(s string) string {
	cut, ok := clip(s)
	if !ok {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(cut), len(s))
}

// Clip is Quote for text that is already quoted or escaped, such as a
// decoder's error message that quotes the input itself: cut to MaxQuoted
// bytes, with the full length said, but not quoted again.
func Clip(s string) string {
	cut, ok := clip(s)
	if !ok {
		return s
	}
	return fmt.Sprintf("%s... (%d bytes)", cut, len(s))
}

// clip cuts s to MaxQuoted bytes without splitting a character and
// reports whether it cut.
func clip(s string) (string, bool) {
	if len(s) <= MaxQuoted {
		return s, false
	}
	n := MaxQuoted
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n], true
}
