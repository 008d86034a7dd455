package main

import (
	"strings"
	"testing"
)

// TestSessionBounds: the session options take values within their bounds
// and refuse the rest with the range, from flags and the file alike.
func TestSessionBounds(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "" accepted
	}{
		{[]string{"--max-sessions-per-user", "1"}, ""},
		{[]string{"--max-sessions-per-user", "960"}, ""},
		{[]string{"--max-sessions-per-user", "0"}, "max_sessions_per_user 0: want 1-960"},
		{[]string{"--max-sessions-per-user", "961"}, "max_sessions_per_user 961: want 1-960"},
		{[]string{"--session-write-timeout", "100ms"}, ""},
		{[]string{"--session-write-timeout", "10ms"}, "session_write_timeout 10ms: want 100ms to 10m"},
		{[]string{"--session-write-timeout", "1h"}, "session_write_timeout 1h0m0s: want 100ms to 10m"},
		{[]string{"--admin-group", ""}, ""},
	} {
		_, err := parseArgs(append([]string{"--config", "/dev/null"}, tc.args...))
		got := ""
		if err != nil {
			got = err.Error()
		}
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%v: %q, want %q", tc.args, got, tc.want)
		}
	}
}
