package legacy

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Wire constants of the original (docs/protocol.md, "Legacy bridge").
const (
	// Prefix starts every datagram; the YAML document follows directly.
	Prefix = "diskd:"
	// MaxDatagram is the longest datagram read or sent: the original reads
	// at most this much, so a longer one arrives cut (and broken).
	MaxDatagram = 1500
	// MaxEntries bounds the entries of one datagram. 1500 bytes hold at
	// most 83 (the shortest entry, "- - ~\n  - ~\n  - x\n", is 18 bytes).
	MaxEntries = 100
	// MaxField bounds one decoded field (uuid, label or device) in bytes:
	// the longest filesystem label (btrfs) is 255 bytes.
	MaxField = 256
)

// Entry is one disk as the original announces it: [uuid, label, device].
// An empty field is a missing one (YAML null, "~", on the wire).
type Entry struct {
	UUID, Label, Device string
}

// Reason is why a datagram was refused. Status counts each.
type Reason int

// Reasons, in the order Parse checks them.
const (
	ReasonNone     Reason = iota
	ReasonTooBig          // over MaxDatagram
	ReasonNoPrefix        // does not start with "diskd:"
	ReasonEncoding        // not UTF-8, or control characters, BOM, NUL
	ReasonSyntax          // not the YAML the original writes (flow collections, anchors, aliases, tags, comments, ...)
	ReasonShape           // YAML, but not a list of [uuid, label, device]
	ReasonLimits          // too many entries or a field too long
	numReasons
)

var reasonNames = [numReasons]string{"none", "too_big", "no_prefix", "encoding", "syntax", "shape", "limits"}

func (r Reason) String() string {
	if r < 0 || r >= numReasons {
		return "unknown"
	}
	return reasonNames[r]
}

// Error is a refused datagram: a Reason and where.
type Error struct {
	Reason Reason
	Detail string
}

func (e *Error) Error() string { return "legacy datagram: " + e.Reason.String() + ": " + e.Detail }

// ReasonOf returns the Reason of an error from Parse (ReasonNone for nil).
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	if err == nil {
		return ReasonNone
	}
	return ReasonSyntax
}

func fail(r Reason, format string, a ...any) error {
	return &Error{Reason: r, Detail: fmt.Sprintf(format, a...)}
}

// Parse reads one datagram of the original: "diskd:" and one YAML document
// holding a sequence of [uuid, label, device] sequences, exactly in the
// form libyaml writes it (block sequences, scalars plain, single- or
// double-quoted, folded over lines past column 80, "~" for null), or
// "--- []" for none. Anything else is refused with a Reason: no YAML
// feature the original does not produce (flow collections, anchors,
// aliases, tags, directives, comments, block scalars, several documents)
// is read at all, so none can be expanded. Parsing is one pass over at
// most MaxDatagram bytes without recursion. Fields come back decoded as
// the disk has them (see DecodeText and DecodeLabel).
func Parse(b []byte) ([]Entry, error) {
	if len(b) > MaxDatagram {
		return nil, fail(ReasonTooBig, "%d bytes, limit %d", len(b), MaxDatagram)
	}
	body, ok := bytes.CutPrefix(b, []byte(Prefix))
	if !ok {
		return nil, fail(ReasonNoPrefix, "does not start with %q", Prefix)
	}
	if !utf8.Valid(body) {
		return nil, fail(ReasonEncoding, "not UTF-8")
	}
	for i, r := range string(body) {
		if r == '\n' {
			continue
		}
		if r < 0x20 || r == 0x7f || r == 0xfeff || r >= 0x80 && r <= 0x9f || r == 0x2028 || r == 0x2029 {
			return nil, fail(ReasonEncoding, "control character %U at byte %d", r, len(Prefix)+i)
		}
	}
	s := string(body)
	switch s {
	case "--- []\n":
		return []Entry{}, nil
	case "--- {}\n":
		return nil, fail(ReasonShape, "a mapping, not a list (the original sends it before its first blkid run ends)")
	}
	rest, ok := strings.CutPrefix(s, "---\n")
	if !ok {
		return nil, fail(ReasonSyntax, "document does not start with \"---\" and a line break")
	}
	if !strings.HasSuffix(rest, "\n") {
		return nil, fail(ReasonSyntax, "last line not terminated")
	}
	lines := strings.Split(rest[:len(rest)-1], "\n")
	p := parser{lines: lines}
	var out []Entry
	for p.i < len(p.lines) {
		if len(out) == MaxEntries {
			return nil, fail(ReasonLimits, "more than %d entries", MaxEntries)
		}
		var f [3]string
		for k := range 3 {
			want := "  - "
			if k == 0 {
				want = "- - "
			}
			if p.i >= len(p.lines) {
				return nil, fail(ReasonShape, "entry %d has %d fields, want 3", len(out)+1, k)
			}
			line := p.lines[p.i]
			v, ok := strings.CutPrefix(line, want)
			if !ok {
				if k > 0 && strings.HasPrefix(line, "- ") {
					return nil, fail(ReasonShape, "entry %d has %d fields, want 3", len(out)+1, k)
				}
				if k == 0 && (strings.HasPrefix(line, "- ") || line == "-") {
					return nil, fail(ReasonShape, "entry %d is not a list", len(out)+1)
				}
				return nil, fail(ReasonSyntax, "line %d: %.40q", p.i+2, line)
			}
			p.i++
			val, err := p.scalar(v)
			if err != nil {
				return nil, err
			}
			f[k] = val
		}
		if p.i < len(p.lines) && strings.HasPrefix(p.lines[p.i], "  - ") {
			return nil, fail(ReasonShape, "entry %d has more than 3 fields", len(out)+1)
		}
		e := Entry{UUID: DecodeText(f[0]), Label: DecodeLabel(f[1]), Device: DecodeText(f[2])}
		for _, v := range []string{e.UUID, e.Label, e.Device} {
			if len(v) > MaxField {
				return nil, fail(ReasonLimits, "field of %d bytes, limit %d", len(v), MaxField)
			}
			if strings.IndexByte(v, 0) >= 0 {
				return nil, fail(ReasonEncoding, "NUL in a field")
			}
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, fail(ReasonSyntax, "empty document")
	}
	return out, nil
}

type parser struct {
	lines []string
	i     int // next line
}

// contIndent is the indentation of a scalar's continuation lines: libyaml
// indents a sequence's items' scalars by 4 here.
const contIndent = "    "

// cont returns the next continuation line's content, if there is one.
func (p *parser) cont() (string, bool) {
	if p.i >= len(p.lines) {
		return "", false
	}
	c, ok := strings.CutPrefix(p.lines[p.i], contIndent)
	if !ok || c == "" || c[0] == ' ' {
		return "", false
	}
	p.i++
	return c, true
}

// scalar reads one field's scalar, whose first line is v.
func (p *parser) scalar(v string) (string, error) {
	if v == "" || v[0] == ' ' {
		return "", fail(ReasonSyntax, "line %d: empty value or extra space", p.i)
	}
	switch v[0] {
	case '\'':
		return p.single(v[1:])
	case '"':
		return p.double(v[1:])
	case '[', '{':
		return "", fail(ReasonSyntax, "line %d: flow collection", p.i+1)
	case '&', '*':
		return "", fail(ReasonSyntax, "line %d: anchor or alias", p.i+1)
	case '!':
		return "", fail(ReasonSyntax, "line %d: tag", p.i+1)
	case '|', '>':
		return "", fail(ReasonSyntax, "line %d: block scalar", p.i+1)
	case '#', '%', '@', '`', ',', ']', '}':
		return "", fail(ReasonSyntax, "line %d: indicator %q", p.i+1, v[0])
	case '-', '?', ':':
		if len(v) == 1 || v[1] == ' ' {
			return "", fail(ReasonShape, "line %d: nested collection", p.i+1)
		}
	}
	if v == "true" || v == "false" {
		// The original quotes these; its reader would take a boolean.
		return "", fail(ReasonSyntax, "line %d: a plain boolean", p.i)
	}
	if v == "~" || v == "null" { // YAML::XS's nulls (not "Null", "NULL")
		if _, more := p.cont(); more {
			return "", fail(ReasonSyntax, "line %d: continued null", p.i)
		}
		return "", nil
	}
	var b strings.Builder
	for first := true; ; first = false {
		if err := checkPlain(v, p.i); err != nil {
			return "", err
		}
		if !first && v[0] == '#' {
			return "", fail(ReasonSyntax, "line %d: comment", p.i)
		}
		if !first {
			b.WriteByte(' ')
		}
		b.WriteString(v)
		var more bool
		if v, more = p.cont(); !more {
			return b.String(), nil
		}
	}
}

// checkPlain refuses what would end a plain scalar or make it something
// else: ": " (a mapping), " #" (a comment), trailing spaces.
func checkPlain(v string, line int) error {
	if strings.HasSuffix(v, " ") {
		return fail(ReasonSyntax, "line %d: trailing space", line)
	}
	if strings.Contains(v, ": ") || strings.HasSuffix(v, ":") {
		return fail(ReasonShape, "line %d: a mapping", line)
	}
	if strings.Contains(v, " #") {
		return fail(ReasonSyntax, "line %d: comment", line)
	}
	return nil
}

// single reads a single-quoted scalar after its opening quote.
func (p *parser) single(v string) (string, error) {
	var b strings.Builder
	for {
		for i := 0; i < len(v); i++ {
			if v[i] != '\'' {
				b.WriteByte(v[i])
				continue
			}
			if i+1 < len(v) && v[i+1] == '\'' {
				b.WriteByte('\'')
				i++
				continue
			}
			if i+1 != len(v) {
				return "", fail(ReasonSyntax, "line %d: text after a quoted value", p.i)
			}
			return b.String(), nil
		}
		if strings.HasSuffix(v, " ") {
			return "", fail(ReasonSyntax, "line %d: trailing space", p.i)
		}
		var more bool
		if v, more = p.cont(); !more {
			return "", fail(ReasonSyntax, "line %d: unterminated quoted value", p.i)
		}
		b.WriteByte(' ')
	}
}

// double reads a double-quoted scalar after its opening quote.
func (p *parser) double(v string) (string, error) {
	var b strings.Builder
	for {
		for i := 0; i < len(v); i++ {
			c := v[i]
			switch c {
			case '"':
				if i+1 != len(v) {
					return "", fail(ReasonSyntax, "line %d: text after a quoted value", p.i)
				}
				return b.String(), nil
			case '\\':
				n, err := unescape(&b, v[i+1:])
				if err != nil {
					return "", fail(ReasonSyntax, "line %d: %v", p.i, err)
				}
				i += n
			default:
				b.WriteByte(c)
			}
		}
		if strings.HasSuffix(v, " ") {
			return "", fail(ReasonSyntax, "line %d: trailing space", p.i)
		}
		var more bool
		if v, more = p.cont(); !more {
			return "", fail(ReasonSyntax, "line %d: unterminated quoted value", p.i)
		}
		b.WriteByte(' ')
	}
}

var simpleEscapes = map[byte]string{
	'0': "\x00", 'a': "\a", 'b': "\b", 't': "\t", '\t': "\t", 'n': "\n", 'v': "\v", 'f': "\f",
	'r': "\r", 'e': "\x1b", ' ': " ", '"': "\"", '/': "/", '\\': "\\",
	'N': "\u0085", '_': "\u00a0", 'L': "\u2028", 'P': "\u2029",
}

// unescape decodes one YAML double-quoted escape (s follows the
// backslash) and returns how many bytes of s it used.
func unescape(b *strings.Builder, s string) (int, error) {
	if s == "" {
		return 0, errors.New("escaped line break")
	}
	if r, ok := simpleEscapes[s[0]]; ok {
		b.WriteString(r)
		return 1, nil
	}
	n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[s[0]]
	if n == 0 || len(s) < 1+n {
		return 0, fmt.Errorf("bad escape \\%c", s[0])
	}
	v, err := strconv.ParseUint(s[1:1+n], 16, 32)
	if err != nil || v > utf8.MaxRune || v >= 0xd800 && v <= 0xdfff {
		return 0, fmt.Errorf("bad escape \\%s", s[:1+n])
	}
	b.WriteRune(rune(v))
	return 1 + n, nil
}
