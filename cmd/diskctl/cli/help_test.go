package cli

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/localsock"
	"github.com/diskd/diskd/pkg/testutil"
)

// helpCases are command lines answered without a daemon: every help text,
// and the usage errors, whose words and exit codes scripts and people
// rely on.
var helpCases = [][]string{
	{"--help"}, {"-h"}, {"help"}, {"help", "where"}, {"help", "nothing"},
	{"list", "--help"}, {"where", "--help"}, {"where", "-h"}, {"history", "--help"}, {"status", "--help"},
	{"refresh", "--help"}, {"localhost", "--help"}, {"watch", "--help"}, {"peers", "--help"},
	{"ping", "--help"}, {"announce", "--help"}, {"mount", "--help"}, {"unmount", "--help"},
	{"shell", "--help"}, {"completion", "--help"}, {"completion", "bash", "--help"},
	{"--json", "where", "--help"}, {"--socket", "/x", "where", "--help"}, {"--timeout=5s", "list", "--help"},
	{"where"}, {"history"}, {"mount"}, {"list", "extra"}, {"status", "extra"}, {"list", "--frob"},
	{"where", "--frob", "x"}, {"list", "--label", "["}, {"--timeout", "x", "where", "y"}, {"--socket"},
	{"frobnicate"}, {"wher"}, {"--frob"}, {"--bus=maybe", "where", "x"}, {"--", "where"},
}

// TestHelpGolden: what each of helpCases prints, and its exit code.
func TestHelpGolden(t *testing.T) {
	t.Setenv(localsock.EnvPath, "/run/diskd/diskd.sock") // the default, whoever runs the test
	var b strings.Builder
	for _, args := range helpCases {
		out, errOut, code := run("", args...)
		fmt.Fprintf(&b, "$ diskctl %s\n[exit %d]\n--- stdout\n%s--- stderr\n%s\n", strings.Join(args, " "), code, out, errOut)
	}
	testutil.Golden(t, filepath.Join("testdata", "help.golden"), b.String())
}

// TestOneCommandTreeAnswersAsTheWhole: a command line run on the tree of
// the one command it names (what diskctl builds to start fast) prints and
// exits exactly as on the whole tree, at the top and in the shell, for
// every command, with the global flags in each form, and for the lines
// that take the whole tree.
func TestOneCommandTreeAnswersAsTheWhole(t *testing.T) {
	sock := daemon(t)
	t.Setenv(localsock.EnvPath, sock)
	lines := slices.Clone(helpCases)
	for _, c := range [][]string{
		{"list"}, {"list", "--json"}, {"list", "--present", "--label", "D*"}, {"where", "DATA"}, {"where", "NOPE"},
		{"where", "--json", "DATA"}, {"history", "OLD"}, {"status"}, {"refresh"}, {"localhost"}, {"peers"},
		{"ping"}, {"announce"}, {"mount", "DATA"}, {"unmount", "DATA"}, {"status", "--json"}, {"where", "My", "Disk"},
	} {
		lines = append(lines, c,
			append([]string{"--socket", sock}, c...), append([]string{"--socket=" + sock, "--json"}, c...),
			append([]string{"--timeout", "5s", "--bus=false"}, c...), append([]string{"--json=false", "--timeout=5s"}, c...),
			append([]string{"--socket"}, c...), append([]string{"-h"}, c...), append([]string{"--bus-address", "x"}, c...))
	}
	for _, top := range []bool{true, false} {
		for _, args := range lines {
			want := runTree(t, args, top, true)
			if got := runTree(t, args, top, false); got != want {
				t.Errorf("top %v, %q: on the one command's tree\n%s\non the whole tree\n%s", top, args, got, want)
			}
		}
	}
	// Each command's name is where invoked looks for it.
	for _, top := range []bool{true, false} {
		for i, c := range (&env{}).commands(top) {
			if got := c.build().Name(); got != c.name {
				t.Errorf("commands()[%d] is %q, its entry says %q", i, got, c.name)
			}
		}
	}
	if e := (&env{}); e.invoked([]string{"where", "x"}, true) != "where" || e.invoked([]string{"--socket", "s", "--json", "list"}, true) != "list" {
		t.Error("invoked does not find the command: the test above compared the whole tree with itself")
	}
}

// TestDirectAnswersAsTheTree: a line diskctl runs without cobra (direct)
// prints and exits exactly as on the whole tree: answers, misses, JSON,
// the global flags in each form, a query too long for the daemon, no
// daemon, a deadline already past; and the lines it leaves to the tree
// (a flag after the command, D-Bus, help) are left there.
func TestDirectAnswersAsTheTree(t *testing.T) {
	sock := daemon(t)
	t.Setenv(localsock.EnvPath, sock)
	absent := filepath.Join(t.TempDir(), "absent.sock")
	lines := slices.Clone(helpCases)
	for _, c := range [][]string{
		{"where", "DATA"}, {"where", "NOPE"}, {"where", "My", "Disk"}, {"where", "1234-abcd"}, {"history", "OLD"},
		{"history", "NOPE"}, {"where", strings.Repeat("x", 5000)}, {"where", "--json", "DATA"}, {"where", "DATA", "--json"},
		{"history", "OLD", "--json"}, {"where", "--", "DATA"}, {"where", "-", "DATA"}, {"list"}, {"status"},
	} {
		lines = append(lines, c,
			append([]string{"--socket", sock}, c...), append([]string{"--socket=" + sock, "--json"}, c...),
			append([]string{"--json", "--timeout", "5s"}, c...), append([]string{"--timeout=5s"}, c...),
			append([]string{"--json=false"}, c...), append([]string{"--json=true"}, c...), append([]string{"--timeout", "x"}, c...),
			append([]string{"--timeout", "1ns"}, c...), append([]string{"--socket", absent}, c...),
			append([]string{"--bus=false"}, c...), append([]string{"--bus-address", "x"}, c...), append([]string{"-h"}, c...))
	}
	direct := 0
	for _, args := range lines {
		want := runTree(t, args, true, true)
		var o, e bytes.Buffer
		env := &env{stdin: strings.NewReader(""), stdout: &o, stderr: &e, dialBus: dialBus}
		code := env.main(args)
		env.close()
		if got := fmt.Sprintf("[exit %d]\n--- stdout\n%s--- stderr\n%s", code, o.String(), e.String()); got != want {
			t.Errorf("%q (direct %v):\n%s\non the whole tree\n%s", args, env.shortLived, got, want)
		}
		if env.shortLived {
			direct++
		}
		// A flag after the command, or D-Bus, is cobra's to read.
		if env.shortLived && (slices.ContainsFunc(args, func(a string) bool {
			return strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--socket") && !strings.HasPrefix(a, "--timeout") && a != "--json"
		}) ||
			!slices.Contains(args, "where") && !slices.Contains(args, "history")) {
			t.Errorf("%q ran direct", args)
		}
	}
	// Of the 7 where and history queries, each with no flag, --socket in
	// both forms, --timeout in both (once past), a bare --json and no
	// daemon: 7 lines each.
	if want := 7 * 7; direct != want {
		t.Errorf("%d lines ran direct, want %d", direct, want)
	}
}

func runTree(t *testing.T, args []string, top, whole bool) string {
	var o, e bytes.Buffer
	env := &env{stdin: strings.NewReader(""), stdout: &o, stderr: &e, dialBus: dialBus}
	if !top {
		// The shell's env, as Main leaves it for shellLine.
		env.socket, env.timeout = localsock.ClientPath(), 30*time.Second
	}
	defer env.close()
	only := env.invoked(args, top)
	if whole {
		only = ""
	}
	code := env.execTree(env.rootCmd(top, only), args)
	return fmt.Sprintf("[exit %d]\n--- stdout\n%s--- stderr\n%s", code, o.String(), e.String())
}
