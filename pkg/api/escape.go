package api

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape makes s safe to print on a terminal as one cell of one line. It
// is the one function every human output of diskd and diskctl passes its
// values through (tables, `where`, `watch`, `status`, the shell, error
// messages); --json carries the exact text instead.
//
// Shown as visible escapes, so a person sees what is there and nothing is
// acted on by the terminal:
//   - a backslash, as \\ (so every escape below is unambiguous);
//   - C0 controls and DEL (U+0000-U+001F, U+007F), as \xNN: ESC starts a
//     terminal sequence, LF and CR break lines, TAB breaks table columns;
//   - bytes that are not UTF-8, as \xNN: a terminal in an 8-bit mode reads
//     0x9B as CSI;
//   - C1 controls (U+0080-U+009F) as \u00NN: U+009B is CSI on a UTF-8
//     terminal too;
//   - format characters (Unicode category Cf: bidi overrides and isolates
//     such as U+202E, zero-width spaces and joiners, U+FEFF) and the line
//     and paragraph separators U+2028 and U+2029, as \uNNNN: they reorder
//     or hide what follows, so "BACKUP" and "BACK\u200bUP" would look the
//     same, and a right-to-left override makes a cell read backwards.
//
// Everything else, including any other non-ASCII letter, is printed as is.
func Escape(s string) string {
	i := 0
	for i < len(s) && s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\' {
		i++
	}
	if i == len(s) {
		return s // the common case: printable ASCII
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			writeHex(&b, `\x`, uint32(s[i]), 2)
		case r == '\\':
			b.WriteString(`\\`)
		case r < 0x20 || r == 0x7f:
			writeHex(&b, `\x`, uint32(r), 2)
		case r >= 0x80 && r <= 0x9f, r == '\u2028', r == '\u2029', unicode.Is(unicode.Cf, r):
			writeHex(&b, `\u`, uint32(r), 4)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func writeHex(b *strings.Builder, prefix string, v uint32, width int) {
	b.WriteString(prefix)
	h := strconv.FormatUint(uint64(v), 16)
	for range width - len(h) {
		b.WriteByte('0')
	}
	b.WriteString(h)
}
