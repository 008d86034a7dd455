package store

import (
	"testing"
	"time"
)

// FuzzStampFormat: stamp.format writes what AppendFormat does whenever
// formatsExactly says so, and says so for every year 0000-9999 with an
// offset in whole minutes; the binary form reads back.
func FuzzStampFormat(f *testing.F) {
	for _, t := range []time.Time{{}, time.Unix(0, 0), time.Unix(-1, 999999999), time.Date(2026, 12, 2, 0, 48, 11, 123456000, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 1, time.FixedZone("e", 14*3600)), time.Date(0, 1, 1, 0, 0, 0, 0, time.FixedZone("w", -12*3600-30*60)),
		time.Date(2000, 2, 29, 12, 0, 0, 100, time.FixedZone("s", 61))} {
		_, off := t.Zone()
		f.Add(t.Unix(), t.Nanosecond(), off)
	}
	f.Fuzz(func(t *testing.T, sec int64, nsec, off int) {
		nsec = (nsec%1e9 + 1e9) % 1e9
		off %= 26 * 3600
		tm := time.Unix(sec, int64(nsec)).In(time.FixedZone("z", off))
		want := string(tm.AppendFormat(nil, time.RFC3339Nano))
		got := string(stampOf(tm).format(nil))
		exact := formatsExactly(tm)
		if exact != (got == want) {
			t.Fatalf("%s: formatsExactly %v, format %s", want, exact, got)
		}
		if y := tm.Year(); 0 <= y && y <= 9999 && off%60 == 0 && !exact {
			t.Fatalf("%s: format %s", want, got)
		}
		if s, ok := readStamp(string(stampOf(tm).appendBinary(nil))); !ok || s != stampOf(tm) {
			t.Fatalf("%s: binary read back %v %v, want %v", want, s, ok, stampOf(tm))
		}
	})
}

// BenchmarkStampFormat: stamp.format against time.Time.AppendFormat, the
// cost a list pays for a time no row before it had (timeCache).
func BenchmarkStampFormat(b *testing.B) {
	t := time.Date(2026, 12, 2, 0, 48, 11, 123456000, time.Local)
	buf := make([]byte, 0, 64)
	b.Run("stamp", func(b *testing.B) {
		for b.Loop() {
			buf = stampOf(t).format(buf[:0])
		}
	})
	b.Run("baseline-AppendFormat", func(b *testing.B) {
		for b.Loop() {
			buf = t.AppendFormat(buf[:0], time.RFC3339Nano)
		}
	})
}
