package disk

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends d encoded exactly as encoding/json encodes it (a test
// holds the two equal byte for byte), about ten times faster. Listing
// 100,000 disks is the daemon's largest reply; this keeps it cheap.
func AppendJSON(b []byte, d *Disk) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, d.ID)
	b = append(b, `,"node_id":`...)
	b = appendString(b, string(d.Node))
	b = append(b, `,"host":`...)
	b = appendString(b, d.Host)
	b = append(b, `,"name":`...)
	b = appendString(b, d.Name)
	b = append(b, `,"device":`...)
	b = appendString(b, d.Device)
	b = appendOpt(b, `,"majmin":`, d.MajMin)
	b = appendOpt(b, `,"uuid":`, d.UUID)
	b = appendOpt(b, `,"partuuid":`, d.PartUUID)
	b = appendOpt(b, `,"label":`, d.Label)
	b = appendOpt(b, `,"partlabel":`, d.PartLabel)
	b = appendOpt(b, `,"type":`, d.Type)
	b = appendOpt(b, `,"usage":`, d.Usage)
	b = append(b, `,"size":`...)
	b = strconv.AppendUint(b, d.Size, 10)
	b = append(b, `,"read_only":`...)
	b = strconv.AppendBool(b, d.ReadOnly)
	b = append(b, `,"removable":`...)
	b = strconv.AppendBool(b, d.Removable)
	b = append(b, `,"mountpoints":`...)
	if d.Mounts == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, m := range d.Mounts {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, m)
		}
		b = append(b, ']')
	}
	b = append(b, `,"present":`...)
	b = strconv.AppendBool(b, d.Present)
	b = append(b, `,"first_seen":`...)
	b = appendTime(b, d.FirstSeen)
	b = append(b, `,"last_seen":`...)
	b = appendTime(b, d.LastSeen)
	if d.NotUnique {
		b = append(b, `,"not_unique":true`...)
	}
	return append(b, '}')
}

// AppendJSONArray appends ds as a JSON array ("[]" when empty).
func AppendJSONArray(b []byte, ds []Disk) []byte {
	b = append(b, '[')
	for i := range ds {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSON(b, &ds[i])
	}
	return append(b, ']')
}

// AppendJSONString appends s as a JSON string, exactly as encoding/json
// writes it.
func AppendJSONString(b []byte, s string) []byte { return appendString(b, s) }

func appendOpt(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, key...)
	return appendString(b, v)
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

const hex = "0123456789abcdef"

// appendString follows encoding/json: HTML-safe, invalid UTF-8 replaced
// by U+FFFD, U+2028 and U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
