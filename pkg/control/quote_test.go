package control

import (
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/api"
)

// TestLongInputShortErrors: errors that quote what a client sent quote at
// most api.MaxQuoted bytes of it, in the text and the JSON forms, for the
// longest lines a session accepts.
func TestLongInputShortErrors(t *testing.T) {
	path, _ := serve(t, time.Minute)
	long := strings.Repeat("\x01y", (api.MaxLineBytes-40)/2) // every other byte escapes to four
	replies := text(t, path, long, "list "+long,
		`{"cmd":"`+strings.ReplaceAll(long[:1000], "\x01", `\u0001`)+`"}`,
		`{"cmd":"list","`+strings.Repeat("k", api.MaxLineBytes-40)+`":1}`)[1:]
	for i, want := range []string{"unknown command", "no host named", "unknown command", "unknown field"} {
		r := replies[i]
		if !strings.Contains(r, want) || !strings.Contains(r, " bytes)") || len(r) > 4*api.MaxQuoted+100 {
			t.Errorf("reply %d: %d bytes, want a short %q error: %.300q", i, len(r), want, r)
		}
	}
}
