package cli

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

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
