package disk

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// ParseJSONArray decodes a JSON array of disks into the values
// encoding/json would give, without its reflection: diskctl's table of
// 100,000 disks spends its time here. It reads the form AppendJSONArray
// writes (keys as the struct tags spell them, in any order) quickly, and
// hands anything else (other spellings of keys, unknown keys, invalid
// UTF-8, lone surrogates, malformed JSON) to encoding/json, so its result
// and its errors are always encoding/json's. The strings it returns share
// one copy of b, rather than costing an allocation each.
func ParseJSONArray(b []byte) ([]Disk, error) {
	return parseJSONArray(b, string(b))
}

// ParseJSONArrayShared is ParseJSONArray for a caller that hands b over:
// the strings it returns are b's own bytes, not a copy of them, so b
// must never be modified afterwards. (A table of 100,000 disks is then a
// copy of 40 MB less for diskctl.)
func ParseJSONArrayShared(b []byte) ([]Disk, error) {
	if len(b) == 0 {
		return ParseJSONArray(b)
	}
	return parseJSONArray(b, unsafe.String(&b[0], len(b)))
}

// parseJSONArray is ParseJSONArray with s, b as a string, for the strings.
func parseJSONArray(b []byte, s string) ([]Disk, error) {
	if ds, ok := parseArray(b, s); ok {
		return ds, nil
	}
	var ds []Disk
	if err := json.Unmarshal(b, &ds); err != nil {
		return nil, err
	}
	return ds, nil
}

// parser is a position in a JSON text; ok goes false at the first thing
// it does not read exactly as encoding/json would.
type parser struct {
	b       []byte
	s       string // b, once: unescaped strings are its substrings
	i       int
	ok      bool
	noTimes bool // skip times (ParseOwnJSON)
}

// ParseOwnJSON decodes one disk that AppendJSON wrote into b, as
// ParseJSONArray would, except that the times are left zero (read past,
// not parsed); ok is false for anything it does not read exactly. The
// strings share b's bytes, so b must never be modified afterwards: this
// is for a holder of immutable encodings (the store's rows), which has
// the times at hand and decodes the rest on demand.
func ParseOwnJSON(b []byte) (d Disk, ok bool) {
	if len(b) == 0 {
		return d, false
	}
	p := &parser{b: b, s: unsafe.String(&b[0], len(b)), ok: true, noTimes: true}
	p.disk(&d)
	return d, p.ok && p.i == len(b)
}

// ParseRecordJSON decodes b, a JSON object holding a disk under "disk",
// a time under "since" and sightings under "past" (the state file's row
// record, pkg/store), into the values encoding/json would give for a
// struct of those three fields, as ParseJSONArray reads; ok is false
// for anything it does not read exactly, which encoding/json then
// decides. The strings share b's bytes: a caller that reuses b copies
// what it keeps.
func ParseRecordJSON(b []byte) (d Disk, since time.Time, past []Sighting, ok bool) {
	if len(b) == 0 {
		return d, since, nil, false
	}
	p := &parser{b: b, s: unsafe.String(&b[0], len(b)), ok: true}
	seenPast := false
	p.object(func(key string) {
		switch key {
		case "disk":
			p.disk(&d)
		case "since":
			since = p.time()
		case "past":
			if seenPast {
				p.fail() // encoding/json decodes the second into the first's elements
				return
			}
			seenPast = true
			past = p.sightings()
		default:
			p.fail()
		}
	})
	p.ws()
	return d, since, past, p.ok && p.i == len(b)
}

func parseArray(b []byte, s string) ([]Disk, bool) {
	p := &parser{b: b, s: s, ok: true}
	p.ws()
	ds := make([]Disk, 0, len(b)/400+1)
	if p.array(func() {
		ds = append(ds, Disk{})
		p.disk(&ds[len(ds)-1])
	}) {
		ds = nil
	}
	p.ws()
	return ds, p.ok && p.i == len(b)
}

// array reads an array, calling elem at each element, which elem reads
// (or fails); null says it was null.
func (p *parser) array(elem func()) (null bool) {
	if p.lit("null") {
		return true
	}
	if !p.byte('[') {
		p.fail()
		return false
	}
	p.ws()
	if p.byte(']') {
		return false
	}
	for p.ok {
		elem()
		p.ws()
		if p.byte(']') {
			return false
		}
		if !p.byte(',') {
			p.fail()
		}
		p.ws()
	}
	return false
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// byte consumes c if it is next.
func (p *parser) byte(c byte) bool {
	if p.ok && p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *parser) lit(s string) bool {
	if p.ok && len(p.b)-p.i >= len(s) && string(p.b[p.i:p.i+len(s)]) == s {
		p.i += len(s)
		return true
	}
	return false
}

func (p *parser) fail() { p.ok = false }

// object reads an object, calling field for each key with the position
// at its value, which field reads (or fails).
func (p *parser) object(field func(key string)) {
	p.ws()
	if !p.byte('{') {
		p.fail()
		return
	}
	p.ws()
	if p.byte('}') {
		return
	}
	for p.ok {
		key := p.str()
		p.ws()
		if !p.byte(':') {
			p.fail()
			return
		}
		p.ws()
		field(key)
		p.ws()
		if p.byte('}') {
			return
		}
		if !p.byte(',') {
			p.fail()
			return
		}
		p.ws()
	}
}

func (p *parser) disk(d *Disk) {
	p.object(func(key string) {
		switch key {
		case "id":
			d.ID = p.str()
		case "node_id":
			d.Node = NodeID(p.str())
		case "host":
			d.Host = p.str()
		case "name":
			d.Name = p.str()
		case "device":
			d.Device = p.str()
		case "majmin":
			d.MajMin = p.str()
		case "uuid":
			d.UUID = p.str()
		case "partuuid":
			d.PartUUID = p.str()
		case "label":
			d.Label = p.str()
		case "partlabel":
			d.PartLabel = p.str()
		case "type":
			d.Type = p.str()
		case "usage":
			d.Usage = p.str()
		case "size":
			d.Size = p.uint()
		case "read_only":
			d.ReadOnly = p.bool()
		case "removable":
			d.Removable = p.bool()
		case "mountpoints":
			d.Mounts = p.strs()
		case "present":
			d.Present = p.bool()
		case "first_seen":
			d.FirstSeen = p.time()
		case "last_seen":
			d.LastSeen = p.time()
		case "not_unique":
			d.NotUnique = p.bool()
		default:
			p.fail() // encoding/json's matching (case folding) decides
		}
	})
}

// sightings reads an array of sightings, or null (a nil slice).
func (p *parser) sightings() []Sighting {
	out := []Sighting{}
	if p.array(func() {
		out = append(out, Sighting{})
		p.sighting(&out[len(out)-1])
	}) {
		return nil
	}
	return out
}

func (p *parser) sighting(s *Sighting) {
	p.object(func(key string) {
		switch key {
		case "node_id":
			s.Node = NodeID(p.str())
		case "host":
			s.Host = p.str()
		case "name":
			s.Name = p.str()
		case "device":
			s.Device = p.str()
		case "first_seen":
			s.FirstSeen = p.time()
		case "last_seen":
			s.LastSeen = p.time()
		default:
			p.fail()
		}
	})
}

// str reads a string; anything but a string (null included) fails.
func (p *parser) str() string {
	if !p.byte('"') {
		p.fail()
		return ""
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		if plain[c] {
			p.i++
			continue
		}
		switch {
		case c == '"':
			s := p.s[start:p.i]
			p.i++
			return s
		case c == '\\':
			return p.escaped(start)
		case c < 0x20:
			p.fail()
			return ""
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && n == 1 {
				p.fail() // encoding/json replaces it; let it
				return ""
			}
			p.i += n
		default:
			p.i++
		}
	}
	p.fail()
	return ""
}

// plain marks the bytes a string holds as they are: not a quote, a
// backslash, a control character or the start of a multi-byte rune.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// escaped reads the rest of a string that has escapes, from start.
func (p *parser) escaped(start int) string {
	out := append([]byte(nil), p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return string(out)
		case c < 0x20:
			p.fail()
			return ""
		case c == '\\':
			if p.i+1 >= len(p.b) {
				p.fail()
				return ""
			}
			e := p.b[p.i+1]
			p.i += 2
			switch e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r := p.hex4()
				if utf16.IsSurrogate(r) {
					// Only a proper pair; a lone half is encoding/json's.
					if !p.lit(`\u`) {
						p.fail()
						return ""
					}
					r = utf16.DecodeRune(r, p.hex4())
					if r == utf8.RuneError {
						p.fail()
						return ""
					}
				}
				out = utf8.AppendRune(out, r)
			default:
				p.fail()
				return ""
			}
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && n == 1 {
				p.fail()
				return ""
			}
			out = append(out, p.b[p.i:p.i+n]...)
			p.i += n
		default:
			out = append(out, c)
			p.i++
		}
	}
	p.fail()
	return ""
}

func (p *parser) hex4() rune {
	if len(p.b)-p.i < 4 {
		p.fail()
		return 0
	}
	v, err := strconv.ParseUint(string(p.b[p.i:p.i+4]), 16, 32)
	if err != nil {
		p.fail()
		return 0
	}
	p.i += 4
	return rune(v)
}

func (p *parser) uint() uint64 {
	start := p.i
	for p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' {
		p.i++
	}
	// Plain digits only; a leading zero, sign, fraction or exponent is
	// encoding/json's to judge.
	if p.i == start || p.b[start] == '0' && p.i-start > 1 || p.i < len(p.b) && (p.b[p.i] == '.' || p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.fail()
		return 0
	}
	v, err := strconv.ParseUint(string(p.b[start:p.i]), 10, 64)
	if err != nil {
		p.fail()
	}
	return v
}

func (p *parser) bool() bool {
	switch {
	case p.lit("true"):
		return true
	case p.lit("false"):
		return false
	}
	p.fail()
	return false
}

// strs reads an array of strings, or null (a nil slice).
func (p *parser) strs() []string {
	out := []string{}
	if p.array(func() { out = append(out, p.str()) }) {
		return nil
	}
	return out
}

// time reads a time as time.Time's UnmarshalJSON does, from the form
// AppendJSON writes (RFC 3339 with optional fraction); anything with an
// escape is left to encoding/json.
func (p *parser) time() time.Time {
	if !p.byte('"') {
		p.fail()
		return time.Time{}
	}
	start := p.i
	for p.i < len(p.b) && p.b[p.i] != '"' && p.b[p.i] != '\\' {
		p.i++
	}
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		p.fail()
		return time.Time{}
	}
	raw := p.b[start-1 : p.i+1]
	p.i++
	if p.noTimes {
		return time.Time{}
	}
	var t time.Time
	if err := t.UnmarshalJSON(raw); err != nil {
		p.fail()
	}
	return t
}
