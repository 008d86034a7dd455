// Package man_test checks the hand-written man pages: groff formats them
// without a warning, and they document every flag, config key and command
// that the built diskd and diskctl actually have.
package man_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/diskd/diskd/pkg/testutil"
)

func TestGroffClean(t *testing.T) {
	testutil.RequiresTool(t, "groff")
	for _, page := range []string{"diskd.8", "diskctl.1"} {
		// -ww: all warnings; -z: no output, only diagnostics.
		out, err := exec.Command("groff", "-man", "-ww", "-z", page).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("groff %s: %v\n%s", page, err, out)
		}
	}
}

func build(t *testing.T, pkg string) string {
	t.Helper()
	testutil.RequiresTool(t, "go")
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// page returns a man page's source with roff's escapes for '-' and font
// changes removed, so "\-\-state\-dir" reads "--state-dir".
func page(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(b), `\-`, "-")
	return regexp.MustCompile(`\\f[BIRP]`).ReplaceAllString(s, "")
}

// flags returns the long flags a --help output lists.
func flags(help string) []string {
	var fs []string
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-[a-z], )?--([a-z0-9-]+)`).FindAllStringSubmatch(help, -1) {
		fs = append(fs, m[1])
	}
	return fs
}

// entry matches a .TP item's tag line naming word (as in ".BI --socket
// path" or ".BR -h , --help"), and not a longer word it prefixes.
func entry(word string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^\.(B|BI|BR) (?:[^\n]*[ "])?` + regexp.QuoteMeta(word) + `(?:[\s"=]|$)`)
}

// section returns the text of one .SH section.
func section(src, name string) string {
	i := strings.Index(src, "\n.SH "+name+"\n")
	if i < 0 {
		return ""
	}
	rest := src[i+len(name)+5:]
	if j := strings.Index(rest, "\n.SH "); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

func TestDiskdPageCoversFlagsAndKeys(t *testing.T) {
	diskd := build(t, "github.com/diskd/diskd/cmd/diskd")
	src := page(t, "diskd.8")
	help, _ := exec.Command(diskd, "--help").CombinedOutput()
	fs := flags(string(help))
	if len(fs) < 5 {
		t.Fatalf("found only %q in diskd --help:\n%s", fs, help)
	}
	opts := section(src, "OPTIONS")
	for _, f := range fs {
		if !entry("--" + f).MatchString(opts) {
			t.Errorf("diskd.8 OPTIONS has no entry for --%s", f)
		}
	}
	out, err := exec.Command(diskd, "--config", "/dev/null", "--print-config").Output()
	if err != nil {
		t.Fatalf("diskd --print-config: %v", err)
	}
	conf := section(src, "CONFIGURATION")
	for _, m := range regexp.MustCompile(`(?m)^\s*([a-z0-9_]+) = `).FindAllStringSubmatch(string(out), -1) {
		if !strings.Contains(conf, m[1]) {
			t.Errorf("diskd.8 CONFIGURATION does not name the key %s", m[1])
		}
	}
}

func TestDiskctlPageCoversCommandsAndFlags(t *testing.T) {
	diskctl := build(t, "github.com/diskd/diskd/cmd/diskctl")
	src := page(t, "diskctl.1")
	help, err := exec.Command(diskctl, "--help").Output()
	if err != nil {
		t.Fatalf("diskctl --help: %v", err)
	}
	_, cmds, ok := strings.Cut(string(help), "Available Commands:\n")
	if !ok {
		t.Fatalf("no command list in diskctl --help:\n%s", help)
	}
	cmds, _, _ = strings.Cut(cmds, "\n\n")
	commands := section(src, "COMMANDS")
	n := 0
	for _, line := range strings.Split(cmds, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		n++
		c := f[0]
		if !entry(c).MatchString(commands) {
			t.Errorf("diskctl.1 COMMANDS has no entry for %q", c)
		}
		// Each command's own flags are documented with it or as options.
		sub, _ := exec.Command(diskctl, c, "--help").Output()
		local, _, _ := strings.Cut(string(sub), "Global Flags:")
		for _, fl := range flags(local) {
			if fl != "help" && !strings.Contains(src, "--"+fl) {
				t.Errorf("diskctl.1 does not document %s --%s", c, fl)
			}
		}
	}
	if n < 5 {
		t.Fatalf("found only %d commands in diskctl --help", n)
	}
	opts := section(src, "OPTIONS")
	for _, f := range flags(string(help)) {
		if !entry("--" + f).MatchString(opts) {
			t.Errorf("diskctl.1 OPTIONS has no entry for --%s", f)
		}
	}
}
