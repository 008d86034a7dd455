package legacy

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Encode returns the datagram announcing entries, in their order, byte for
// byte as the original's "diskd:" . YAML::XS::Dump(list) would be, and the
// number of entries left out because the datagram would have grown past
// MaxDatagram (the rest still go). An empty field is sent as "~". No
// entries is "diskd:--- []".
func Encode(entries []Entry) (b []byte, skipped int) {
	b = append(b, Prefix+"---\n"...)
	n := 0
	for _, e := range entries {
		t := appendEntry(nil, e)
		if len(b)+len(t) > MaxDatagram {
			skipped++
			continue
		}
		b = append(b, t...)
		n++
	}
	if n == 0 {
		return []byte(Prefix + "--- []\n"), skipped
	}
	return b, skipped
}

func appendEntry(b []byte, e Entry) []byte {
	b = append(b, "- -"...)
	b = appendScalar(b, e.UUID)
	b = append(b, "\n  -"...)
	b = appendScalar(b, e.Label)
	b = append(b, "\n  -"...)
	b = appendScalar(b, e.Device)
	return append(b, '\n')
}

// libyaml's emitter settings as YAML::XS uses them, and where an entry's
// scalars sit: after "- - " or "  - ", at column 4, continued at indent 4.
const (
	bestWidth = 80
	indent    = 4
)

type style int

const (
	plain style = iota
	single
	double
)

// appendScalar appends " " and s as YAML::XS dumps a Perl string: "~" for
// a missing one; single-quoted when it reads as null, a boolean or a
// number; else libyaml's choice: plain when nothing in it means something
// to YAML, single-quoted when it must be quoted, double-quoted with
// escapes when it holds characters YAML cannot print. Long values fold at
// a space past column 80, as libyaml does.
func appendScalar(b []byte, s string) []byte {
	if s == "" {
		return append(b, " ~"...)
	}
	s = prepare(s)
	st := plain
	if s == "~" || s == "true" || s == "false" || s == "null" || looksLikeNumber(s) {
		st = single
	}
	plainOK, singleOK := analyze(s)
	if st == plain && !plainOK {
		st = single
	}
	if st == single && !singleOK {
		st = double
	}
	w := writer{b: b, col: indent - 1}
	switch st {
	case plain:
		w.put(" ")
		w.plain(s)
	case single:
		w.put(" '")
		w.single(s)
		w.put("'")
	case double:
		w.put(" \"")
		w.double(s)
		w.put("\"")
	}
	return w.b
}

// analyze is libyaml's yaml_emitter_analyze_scalar reduced to what
// decides the style of a block sequence item without line breaks (prepare
// removed them): whether it may be plain, and single-quoted.
func analyze(s string) (plainOK, singleOK bool) {
	plainOK, singleOK = true, true
	if strings.HasPrefix(s, "---") || strings.HasPrefix(s, "...") {
		plainOK = false
	}
	blankz := func(i int) bool { // the character at byte i is blank or the end
		return i >= len(s) || s[i] == ' ' || s[i] == '\t'
	}
	preceded := true
	for i, r := range s {
		next := i + utf8.RuneLen(r)
		if i == 0 {
			switch {
			case strings.ContainsRune("#,[]{}&*!|>'\"%@`", r):
				plainOK = false
			case (r == '?' || r == ':' || r == '-') && blankz(next):
				plainOK = false
			}
		} else {
			if r == ':' && blankz(next) || r == '#' && preceded {
				plainOK = false
			}
		}
		if !printable(r) {
			plainOK, singleOK = false, false
		}
		if r == ' ' && (i == 0 || next == len(s)) {
			plainOK = false
		}
		preceded = r == ' ' || r == '\t'
	}
	return plainOK, singleOK
}

// printable is libyaml's IS_PRINTABLE: tab and characters outside the
// BMP are not.
func printable(r rune) bool {
	return r == '\n' || r >= 0x20 && r <= 0x7e || r >= 0xa0 && r <= 0xd7ff ||
		r >= 0xe000 && r <= 0xfffd && r != 0xfeff
}

// writer tracks the column as libyaml does (one per character).
type writer struct {
	b   []byte
	col int
}

func (w *writer) put(s string) {
	w.b = append(w.b, s...)
	w.col += utf8.RuneCountInString(s)
}

func (w *writer) fold() {
	w.b = append(w.b, '\n')
	w.b = append(w.b, strings.Repeat(" ", indent)...)
	w.col = indent
}

// foldAt reports whether libyaml breaks the line at the space at byte i.
func (w *writer) foldAt(s string, i int, spaces bool) bool {
	return !spaces && w.col > bestWidth && !(i+1 < len(s) && s[i+1] == ' ')
}

func (w *writer) plain(s string) {
	spaces := false
	for i, r := range s {
		if r == ' ' {
			if w.foldAt(s, i, spaces) {
				w.fold()
			} else {
				w.put(" ")
			}
			spaces = true
			continue
		}
		w.put(string(r))
		spaces = false
	}
}

func (w *writer) single(s string) {
	spaces := false
	for i, r := range s {
		if r == ' ' {
			if i != 0 && i != len(s)-1 && w.foldAt(s, i, spaces) {
				w.fold()
			} else {
				w.put(" ")
			}
			spaces = true
			continue
		}
		if r == '\'' {
			w.put("'")
		}
		w.put(string(r))
		spaces = false
	}
}

func (w *writer) double(s string) {
	spaces := false
	for i, r := range s {
		switch {
		case !printable(r) || r == '"' || r == '\\' || r == '\n':
			w.put(escape(r))
			spaces = false
		case r == ' ':
			if i != 0 && i != len(s)-1 && !spaces && w.col > bestWidth {
				w.fold()
				if i+1 < len(s) && s[i+1] == ' ' {
					w.put("\\")
				}
			} else {
				w.put(" ")
			}
			spaces = true
		default:
			w.put(string(r))
			spaces = false
		}
	}
}

// escape is libyaml's double-quoted escape of r.
func escape(r rune) string {
	switch r {
	case 0:
		return `\0`
	case 0x07:
		return `\a`
	case 0x08:
		return `\b`
	case 0x09:
		return `\t`
	case 0x0a:
		return `\n`
	case 0x0b:
		return `\v`
	case 0x0c:
		return `\f`
	case 0x0d:
		return `\r`
	case 0x1b:
		return `\e`
	case '"':
		return `\"`
	case '\\':
		return `\\`
	case 0x85:
		return `\N`
	case 0x2028:
		return `\L`
	case 0x2029:
		return `\P`
	}
	switch {
	case r <= 0xff:
		return fmt.Sprintf(`\x%02X`, r)
	case r <= 0xffff:
		return fmt.Sprintf(`\u%04X`, r)
	}
	return fmt.Sprintf(`\U%08X`, r)
}
