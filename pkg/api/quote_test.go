package api

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestQuote(t *testing.T) {
	long := strings.Repeat("a", 1<<20)
	for _, tc := range []struct{ in, quote, clip string }{
		{"BACKUP", `"BACKUP"`, "BACKUP"},
		{"", `""`, ""},
		{"tab\there\nnl\x00", `"tab\there\nnl\x00"`, "tab\there\nnl\x00"},
		{"\xff", `"\xff"`, "\xff"},
		{strings.Repeat("b", MaxQuoted), `"` + strings.Repeat("b", MaxQuoted) + `"`, strings.Repeat("b", MaxQuoted)},
		{long, `"` + strings.Repeat("a", MaxQuoted) + `"... (1048576 bytes)`, strings.Repeat("a", MaxQuoted) + "... (1048576 bytes)"},
		// A character across the cut is left out whole, not split.
		{strings.Repeat("c", MaxQuoted-1) + "é" + "zzz", `"` + strings.Repeat("c", MaxQuoted-1) + `"... (104 bytes)`,
			strings.Repeat("c", MaxQuoted-1) + "... (104 bytes)"},
	} {
		if got := Quote(tc.in); got != tc.quote {
			t.Errorf("Quote(%.20q) = %.200q, want %.200q", tc.in, got, tc.quote)
		}
		if got := Clip(tc.in); got != tc.clip {
			t.Errorf("Clip(%.20q) = %.200q, want %.200q", tc.in, got, tc.clip)
		}
	}
	// The worst case: a megabyte of bytes that each escape to four.
	worst := strings.Repeat("\x01", 1<<20)
	if n := len(Quote(worst)); n > 4*MaxQuoted+40 {
		t.Errorf("Quote of 1 MiB of control bytes is %d bytes long", n)
	}
	if !utf8.ValidString(Quote(strings.Repeat("é", 1<<19))) {
		t.Error("Quote split a character")
	}
}
