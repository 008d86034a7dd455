package legacy

import (
	"strings"
	"unicode/utf8"
)

// The original takes blkid's output as bytes and YAML::XS takes bytes as
// Latin-1 characters, so what reaches the wire depends on its blkid:
//
//   - util-linux blkid (all current ones) prints bytes >= 0x80 as "M-x",
//     control bytes as "^x" and escapes '"' and '\' with a backslash: the
//     wire is ASCII ("DonnM-CM-)es" for "Données", "tab^Ix" for a tab).
//   - a blkid that passes raw bytes gets each byte read as one Latin-1
//     character and UTF-8-encoded again ("é", c3 a9, arrives as c3 83 c2 a9;
//     characters that land in U+0080-U+009F arrive as "\xNN" escapes).
//
// DecodeText and DecodeLabel give back the bytes the disk really has.

// DecodeText undoes the second UTF-8 encoding: when every character of s
// is below U+0100 and at least one is not ASCII, and those characters
// taken as bytes are valid UTF-8, those bytes are the text. Otherwise s is
// already right: a lone Latin-1 byte such as "caf\xe9" arrives as "café",
// which is the best rendering of it.
func DecodeText(s string) string {
	ascii := true
	for _, r := range s {
		if r > 0xff {
			return s
		}
		if r >= 0x80 {
			ascii = false
		}
	}
	if ascii {
		return s
	}
	b := make([]byte, 0, len(s))
	for _, r := range s {
		b = append(b, byte(r))
	}
	if !utf8.Valid(b) {
		return s
	}
	return string(b)
}

// DecodeLabel is DecodeText, then blkid's notation undone ("M-x" is
// x+0x80, "^x" a control byte, backslash escapes '"' and '\') when s uses
// it and the bytes it stands for are valid UTF-8 without NUL. A label
// whose own text looks like the notation ("M-DISC") decodes to invalid
// UTF-8 and is kept as it is.
func DecodeLabel(s string) string {
	s = DecodeText(s)
	if !strings.ContainsAny(s, "^\\") && !strings.Contains(s, "M-") {
		return s
	}
	var b []byte
	for i := 0; i < len(s); {
		var hi byte
		if strings.HasPrefix(s[i:], "M-") && i+2 < len(s) {
			hi, i = 0x80, i+2
		}
		c := s[i]
		switch {
		case c == '^' && i+1 < len(s) && (s[i+1] >= '@' && s[i+1] <= '_' || s[i+1] == '?'):
			c = s[i+1] ^ 0x40
			i += 2
		case c == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\'):
			c = s[i+1]
			i += 2
		default:
			i++
		}
		b = append(b, hi|c)
	}
	if !utf8.Valid(b) || strings.IndexByte(string(b), 0) >= 0 || string(b) == s {
		return s
	}
	return string(b)
}

// prepare turns one of our fields (bytes, usually UTF-8) into the
// character string the original's YAML::XS would be given: valid UTF-8
// stays as it is, so an original peer shows our labels right; a byte that
// is not UTF-8 becomes the Latin-1 character the original would make of
// it; a line break, which the original can never send (blkid prints one
// line per device), goes in blkid's notation ("^J"), as the original with
// a real blkid would have sent it.
func prepare(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		i += n
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteRune(rune(s[i-1]))
		case r == '\n':
			b.WriteString("^J")
		case r == '\r':
			b.WriteString("^M")
		case r == 0x85:
			b.WriteString("M-BM-^E")
		case r == 0x2028:
			b.WriteString("M-bM-^@M-(")
		case r == 0x2029:
			b.WriteString("M-bM-^@M-)")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
