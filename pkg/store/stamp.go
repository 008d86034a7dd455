package store

import (
	"encoding/binary"
	"time"
)

// A row's encoding keeps its times (first_seen, last_seen) as a stamp:
// seconds, nanoseconds and offset from UTC as varints, 8 to 10 bytes
// rather than the 27 to 35 of their RFC 3339 text, and a list formats
// them (stamp.format, a few times cheaper than time.Time.AppendFormat).
// encodeRow and withTime check that format writes exactly what
// AppendFormat(time.RFC3339Nano) does for the time at hand; a time it
// would not (a year beyond 0000-9999, an offset in seconds) makes the
// encoding keep both times as text (rowTextTimes).

// stamp is a time as RFC 3339 shows it: the instant and the offset.
type stamp struct {
	sec       int64
	nsec, off int32
}

func stampOf(t time.Time) stamp {
	_, off := t.Zone()
	return stamp{sec: t.Unix(), nsec: int32(t.Nanosecond()), off: int32(off)}
}

// appendBinary appends s as three varints.
func (s stamp) appendBinary(b []byte) []byte {
	b = binary.AppendVarint(b, s.sec)
	b = binary.AppendUvarint(b, uint64(s.nsec))
	return binary.AppendVarint(b, int64(s.off))
}

// readStamp reads what appendBinary wrote, all of x.
func readStamp(x string) (s stamp, ok bool) {
	v := values{s: x}
	sec, ok1 := v.uvarint()
	nsec, ok2 := v.uvarint()
	off, ok3 := v.uvarint()
	s = stamp{sec: unzig(sec), nsec: int32(nsec), off: int32(unzig(off))}
	return s, ok1 && ok2 && ok3 && v.i == len(x)
}

func unzig(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// format appends s as time.RFC3339Nano, as time.Time.AppendFormat does
// for a year within 0000-9999 and an offset in whole minutes.
func (s stamp) format(b []byte) []byte {
	t := s.sec + int64(s.off)
	days, rem := t/86400, t%86400
	if rem < 0 {
		rem += 86400
		days--
	}
	y, m, d := civil(days)
	if y < 0 || y > 9999 {
		b = appendDigits(b, y, 4) // not what AppendFormat writes: formatsExactly says so
	} else {
		b = append(b, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10))
	}
	b = append(b, '-', byte('0'+m/10), byte('0'+m%10), '-', byte('0'+d/10), byte('0'+d%10), 'T',
		byte('0'+rem/36000), byte('0'+rem/3600%10), ':', byte('0'+rem/600%6), byte('0'+rem/60%10), ':',
		byte('0'+rem%60/10), byte('0'+rem%10))
	if n := s.nsec; n != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i > 0; i-- {
			frac[i] = byte('0' + n%10)
			n /= 10
		}
		end := 10
		for frac[end-1] == '0' {
			end--
		}
		b = append(b, frac[:end]...)
	}
	if s.off == 0 {
		return append(b, 'Z')
	}
	zone := s.off / 60
	if zone < 0 {
		b = append(b, '-')
		zone = -zone
	} else {
		b = append(b, '+')
	}
	b = appendDigits(b, int64(zone/60), 2)
	b = append(b, ':')
	return appendDigits(b, int64(zone%60), 2)
}

// civil returns the proleptic Gregorian date of days since 1970-01-01
// (H. Hinnant's civil_from_days).
func civil(days int64) (y, m, d int64) {
	z := days + 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = doy - (153*mp+2)/5 + 1
	m = mp + 3
	if mp >= 10 {
		m = mp - 9
	}
	y = yoe + era*400
	if m <= 2 {
		y++
	}
	return y, m, d
}

// appendDigits appends v (0 <= v) in at least n digits, zero-padded.
func appendDigits(b []byte, v int64, n int) []byte {
	var buf [20]byte
	i := len(buf)
	for v >= 10 || n > 1 {
		i--
		buf[i] = byte('0' + v%10)
		v /= 10
		n--
	}
	i--
	buf[i] = byte('0' + v%10)
	return append(b, buf[i:]...)
}

// formatsExactly reports whether stamp.format writes t as AppendFormat.
func formatsExactly(t time.Time) bool {
	var a, b [64]byte
	return string(stampOf(t).format(a[:0])) == string(t.AppendFormat(b[:0], time.RFC3339Nano))
}
