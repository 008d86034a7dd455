// Package packaging_test builds the .deb and .rpm with `make package` and
// checks them with the distributions' own tools (lintian, dpkg-deb, rpm),
// checks `make install DESTDIR= PREFIX=`, and checks that diskd.conf
// documents every option the daemon has, with its real default.
package packaging_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/diskd/diskd/pkg/testutil"
)

// repoRoot is where make runs: the module root, one level up.
func repoRoot(t *testing.T) string {
	t.Helper()
	r, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func runIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// built holds the result of one `make package` shared by the tests.
var built struct {
	once     sync.Once
	dir      string // holds bin/, dist/
	deb, rpm string
	err      string
}

// buildPackages runs `make package` once, into a directory of its own (so
// it never races other packages' builds over bin/ and dist/).
func buildPackages(t *testing.T) (deb, rpm, stage string) {
	t.Helper()
	testutil.RequiresTool(t, "make", "dpkg-deb", "rpm")
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "diskd-package-test-")
		if err != nil {
			built.err = err.Error()
			return
		}
		built.dir = dir
		cmd := exec.Command("make", "--no-print-directory", "package",
			"BIN="+filepath.Join(dir, "bin"), "PKG_DIST="+filepath.Join(dir, "dist"))
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = "make package: " + err.Error() + "\n" + string(out)
			return
		}
		debs, _ := filepath.Glob(filepath.Join(dir, "dist", "diskd_*.deb"))
		rpms, _ := filepath.Glob(filepath.Join(dir, "dist", "diskd-*.rpm"))
		if len(debs) != 1 || len(rpms) != 1 {
			built.err = "make package made " + strings.Join(append(debs, rpms...), ", ")
			return
		}
		built.deb, built.rpm = debs[0], rpms[0]
	})
	if built.err != "" {
		t.Fatal(built.err)
	}
	return built.deb, built.rpm, filepath.Join(built.dir, "dist", "stage")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// debFiles lists the regular files and symlinks in a .deb, without dirs.
func debFiles(t *testing.T, deb string) []string {
	var files []string
	for _, line := range strings.Split(runIn(t, ".", "dpkg-deb", "--contents", deb), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || strings.HasPrefix(f[0], "d") {
			continue
		}
		files = append(files, strings.TrimPrefix(f[5], "."))
	}
	sort.Strings(files)
	return files
}

func rpmFiles(t *testing.T, rpm string) []string {
	files := strings.Fields(runIn(t, ".", "rpm", "-qlp", rpm))
	sort.Strings(files)
	return files
}

// stageFiles lists the files `make install` put under stage.
func stageFiles(t *testing.T, stage string) []string {
	var files []string
	err := filepath.WalkDir(stage, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files = append(files, strings.TrimPrefix(p, stage))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

// The only differences allowed between the .deb, the .rpm and the staged
// install: where each distribution's zsh looks, and Debian's own metadata.
const (
	debZsh = "/usr/share/zsh/vendor-completions/_diskctl"
	rpmZsh = "/usr/share/zsh/site-functions/_diskctl"
)

var debOnly = []string{"/usr/share/doc/diskd/changelog.Debian.gz", "/usr/share/lintian/overrides/diskd"}

// wantFiles are what the issue asks the packages to hold.
var wantFiles = []string{
	"/usr/bin/diskd",
	"/usr/bin/diskctl",
	"/usr/lib/systemd/system/diskd.service",
	"/usr/lib/systemd/system/diskd.socket",
	"/usr/lib/sysusers.d/diskd.conf",
	"/usr/share/dbus-1/system.d/org.diskd.Diskd1.conf",
	"/usr/share/dbus-1/system-services/org.diskd.Diskd1.service",
	"/usr/share/dbus-1/interfaces/org.diskd.Diskd1.xml",
	"/usr/share/man/man8/diskd.8.gz",
	"/usr/share/man/man1/diskctl.1.gz",
	"/usr/share/bash-completion/completions/diskctl",
	debZsh,
	"/usr/share/fish/vendor_completions.d/diskctl.fish",
	"/etc/diskd/diskd.conf",
	"/usr/share/doc/diskd/copyright",
}

func TestPackageContents(t *testing.T) {
	deb, rpm, stage := buildPackages(t)
	inDeb, inRPM, staged := debFiles(t, deb), rpmFiles(t, rpm), stageFiles(t, stage)
	staged = slices.DeleteFunc(staged, func(f string) bool { return f == "/changelog.Debian.gz" })

	for _, f := range wantFiles {
		if !slices.Contains(inDeb, f) {
			t.Errorf("the .deb lacks %s", f)
		}
	}
	// The .rpm: the same files, with zsh's directory translated.
	debAsRPM := slices.DeleteFunc(slices.Clone(inDeb), func(f string) bool { return slices.Contains(debOnly, f) })
	for i, f := range debAsRPM {
		if f == debZsh {
			debAsRPM[i] = rpmZsh
		}
	}
	sort.Strings(debAsRPM)
	if !slices.Equal(debAsRPM, inRPM) {
		t.Errorf("rpm -qlp and dpkg-deb -c differ:\nrpm: %q\ndeb: %q", inRPM, debAsRPM)
	}
	// nfpm.yaml lists files one by one: none of the staged install may be
	// left out of the packages.
	debNoMeta := slices.DeleteFunc(slices.Clone(inDeb), func(f string) bool { return slices.Contains(debOnly, f) })
	if !slices.Equal(debNoMeta, staged) {
		t.Errorf("the .deb and `make install` differ:\ndeb:     %q\ninstall: %q", debNoMeta, staged)
	}
}

func TestPackageMetadata(t *testing.T) {
	deb, rpm, _ := buildPackages(t)
	dir := t.TempDir()
	runIn(t, ".", "dpkg-deb", "--control", deb, dir)
	conffiles, err := os.ReadFile(filepath.Join(dir, "conffiles"))
	if err != nil || strings.TrimSpace(string(conffiles)) != "/etc/diskd/diskd.conf" {
		t.Errorf("deb conffiles = %q (%v), want /etc/diskd/diskd.conf", conffiles, err)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if _, err := os.Stat(filepath.Join(dir, s)); err != nil {
			t.Errorf("deb has no %s: %v", s, err)
		}
	}
	if got := strings.TrimSpace(runIn(t, ".", "rpm", "-qcp", rpm)); got != "/etc/diskd/diskd.conf" {
		t.Errorf("rpm config files = %q", got)
	}
	scripts := runIn(t, ".", "rpm", "-qp", "--scripts", rpm)
	for _, s := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet"} {
		if !strings.Contains(scripts, s) {
			t.Errorf("rpm lacks a %s:\n%s", s, scripts)
		}
	}
	// util-linux (blkid) is Essential on Debian; the rpm must name it.
	if req := runIn(t, ".", "rpm", "-qRp", rpm); !strings.Contains(req, "util-linux") {
		t.Errorf("rpm does not require util-linux:\n%s", req)
	}
}

func TestLintian(t *testing.T) {
	testutil.RequiresTool(t, "lintian")
	deb, _, _ := buildPackages(t)
	out, err := exec.Command("lintian", "--tag-display-limit", "0", deb).CombinedOutput()
	// Exit status 1 means policy violations (errors, by default); anything
	// else non-zero means lintian itself failed.
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
		t.Fatalf("lintian: %v\n%s", err, out)
	}
	var errs []string
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "E: "):
			errs = append(errs, line)
		case strings.HasPrefix(line, "W: "):
			t.Log("lintian:", line)
		}
	}
	if len(errs) > 0 || err != nil {
		t.Errorf("lintian errors (%v):\n%s", err, strings.Join(errs, "\n"))
	}
}

// TestMaintainerScripts checks the scripts parse, and that they never start
// anything without consulting the presets first.
func TestMaintainerScripts(t *testing.T) {
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		p := filepath.Join("scripts", s)
		runIn(t, ".", "sh", "-n", p)
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable", p)
		}
	}
	b, err := os.ReadFile("scripts/postinst")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	preset := strings.Index(s, "preset diskd.service")
	start := strings.Index(s, "invoke start")
	gate := strings.Index(s, "is-enabled diskd.service")
	if preset < 0 || start < 0 || gate < 0 || !(preset < gate && gate < start) {
		t.Errorf("postinst must run `systemctl preset` and start only units the presets enabled")
	}
}

// TestSysusersMakesTheAdminGroup: the package's sysusers.d file, applied
// by the real systemd-sysusers to an empty root, makes the system group
// diskd (--admin-group's default), and postinst applies it (or groupadd)
// on every install and upgrade, also where systemd is missing.
func TestSysusersMakesTheAdminGroup(t *testing.T) {
	testutil.RequiresTool(t, "systemd-sysusers")
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	runIn(t, ".", "systemd-sysusers", "--root="+root, filepath.Join(repoRoot(t), "systemd", "diskd.sysusers"))
	group, err := os.ReadFile(filepath.Join(root, "etc", "group"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^diskd:x:[0-9]+:$`).Match(group) {
		t.Errorf("systemd-sysusers made no group diskd:\n%s", group)
	}
	b, err := os.ReadFile("scripts/postinst")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	sysusers, groupadd := strings.Index(s, "systemd-sysusers diskd.conf"), strings.Index(s, "groupadd --system diskd")
	exit := strings.Index(s, "command -v systemctl >/dev/null 2>&1 || exit 0")
	if sysusers < 0 || groupadd < 0 || exit < 0 || !(sysusers < exit && groupadd < exit) {
		t.Errorf("postinst must make the group diskd (systemd-sysusers, else groupadd) before it exits for want of systemd")
	}
}

// TestInstallDestdir installs into a staging root with a non-/usr prefix:
// paths follow PREFIX, the units point at the installed binary, the bus
// policy lands where dbus-daemon reads it, a changed config survives a
// second install, and uninstall leaves only the config.
func TestInstallDestdir(t *testing.T) {
	testutil.RequiresTool(t, "make")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	install := []string{"make", "--no-print-directory", "install", "BIN=" + filepath.Join(dir, "bin"),
		"DESTDIR=" + root, "PREFIX=/opt/diskd"}
	runIn(t, repoRoot(t), install...)
	for _, f := range []string{
		"/opt/diskd/bin/diskd",
		"/opt/diskd/bin/diskctl",
		"/opt/diskd/lib/systemd/system/diskd.service",
		"/opt/diskd/lib/systemd/system/diskd.socket",
		"/etc/dbus-1/system.d/org.diskd.Diskd1.conf",
		"/etc/sysusers.d/diskd.conf",
		"/opt/diskd/share/dbus-1/system-services/org.diskd.Diskd1.service",
		"/opt/diskd/share/man/man8/diskd.8.gz",
		"/opt/diskd/share/man/man1/diskctl.1.gz",
		"/opt/diskd/share/bash-completion/completions/diskctl",
		"/opt/diskd/share/zsh/vendor-completions/_diskctl",
		"/opt/diskd/share/fish/vendor_completions.d/diskctl.fish",
		"/etc/diskd/diskd.conf",
	} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("make install: %v", err)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(root, "/opt/diskd/lib/systemd/system/diskd.service"))
	if !strings.Contains(string(unit), "\nExecStart=/opt/diskd/bin/diskd\n") {
		t.Errorf("installed diskd.service does not start /opt/diskd/bin/diskd")
	}
	act, _ := os.ReadFile(filepath.Join(root, "/opt/diskd/share/dbus-1/system-services/org.diskd.Diskd1.service"))
	if strings.Contains(string(act), "/usr/bin/diskd") {
		t.Errorf("activation file still names /usr/bin/diskd:\n%s", act)
	}
	// Completions are the real cobra output, not empty files.
	for f, want := range map[string]string{
		"/opt/diskd/share/bash-completion/completions/diskctl":    "__start_diskctl",
		"/opt/diskd/share/zsh/vendor-completions/_diskctl":        "#compdef diskctl",
		"/opt/diskd/share/fish/vendor_completions.d/diskctl.fish": "complete -c diskctl",
	} {
		b, _ := os.ReadFile(filepath.Join(root, f))
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %q", f, want)
		}
	}

	conf := filepath.Join(root, "etc/diskd/diskd.conf")
	if err := os.WriteFile(conf, []byte("log_level = \"debug\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runIn(t, repoRoot(t), install...)
	if b, _ := os.ReadFile(conf); string(b) != "log_level = \"debug\"\n" {
		t.Errorf("second make install overwrote the administrator's config: %q", b)
	}

	uninstall := append([]string{"make", "--no-print-directory", "uninstall"}, install[3:]...)
	runIn(t, repoRoot(t), uninstall...)
	var left []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, strings.TrimPrefix(p, root))
		}
		return nil
	})
	if !slices.Equal(left, []string{"/etc/diskd/diskd.conf"}) {
		t.Errorf("after uninstall, left: %q (want only the config)", left)
	}
}

// daemonKeys returns the daemon's option keys (as section.key) with the
// defaults --print-config shows. Options print-config leaves out (empty
// lists) are found through their flags: each flag must set some key, which
// is looked up under its own name or its plural, in any section, by asking
// diskd whether it knows the key.
func daemonKeys(t *testing.T, diskd string) (keys []string, defaults map[string]string) {
	t.Helper()
	defaults = map[string]string{}
	out := runIn(t, ".", diskd, "--config", "/dev/null", "--print-config")
	sections := []string{""}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]") + "."
			sections = append(sections, section)
		default:
			k, v, ok := strings.Cut(line, " = ")
			if !ok {
				t.Fatalf("--print-config line %q", line)
			}
			defaults[section+k] = v
		}
	}
	help, _ := exec.Command(diskd, "--help").CombinedOutput()
	for _, m := range regexp.MustCompile(`(?m)^\s+--([a-z0-9-]+)`).FindAllStringSubmatch(string(help), -1) {
		switch m[1] {
		case "config", "print-config", "version", "help":
			continue
		}
		name := strings.ReplaceAll(m[1], "-", "_")
		if hasKey(defaults, name) || hasKey(defaults, name+"s") {
			continue
		}
		found := false
		for _, sec := range sections {
			for _, cand := range []string{name, name + "s"} {
				if !found && knowsKey(t, diskd, sec, cand) {
					defaults[sec+cand] = ""
					found = true
				}
			}
		}
		if !found {
			t.Errorf("flag --%s sets no configuration key diskd accepts (tried %s and %ss in %q)", m[1], name, name, sections)
		}
	}
	for k := range defaults {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) < 5 {
		t.Fatalf("found only %q options in diskd --print-config / --help:\n%s\n%s", keys, out, help)
	}
	return keys, defaults
}

// hasKey reports whether name is a key of m in any section.
func hasKey(m map[string]string, name string) bool {
	for k := range m {
		if k == name || strings.HasSuffix(k, "."+name) {
			return true
		}
	}
	return false
}

// knowsKey asks diskd whether key exists in section: it rejects unknown
// keys as "unknown option"; a known one with a value of the wrong type
// fails differently.
func knowsKey(t *testing.T, diskd, section, key string) bool {
	t.Helper()
	conf := key + " = \"x\"\n"
	if section != "" {
		conf = "[" + strings.TrimSuffix(section, ".") + "]\n" + conf
	}
	p := filepath.Join(t.TempDir(), "probe.conf")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(diskd, "--config", p, "--print-config").CombinedOutput()
	return err == nil || !strings.Contains(string(out), "unknown option")
}

func buildDiskd(t *testing.T) string {
	t.Helper()
	testutil.RequiresTool(t, "go")
	bin := filepath.Join(t.TempDir(), "diskd")
	runIn(t, ".", "go", "build", "-o", bin, "github.com/diskd/diskd/cmd/diskd")
	return bin
}

// confEntries reads diskd.conf's commented-out "# key = value" lines.
func confEntries(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("diskd.conf")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	section := ""
	for _, line := range strings.Split(string(b), "\n") {
		if s, ok := strings.CutPrefix(line, "# ["); ok {
			section = strings.TrimSuffix(s, "]") + "."
			continue
		}
		if k, v, ok := strings.Cut(strings.TrimPrefix(line, "# "), " = "); ok && strings.HasPrefix(line, "# ") &&
			regexp.MustCompile(`^[a-z0-9_]+$`).MatchString(k) {
			m[section+k] = v
		}
	}
	return m
}

// TestConfigDocumentsEveryOption: each option of the daemon appears in
// diskd.conf as "# key = default", with the daemon's real default, and the
// file with every line uncommented is a valid configuration.
func TestConfigDocumentsEveryOption(t *testing.T) {
	diskd := buildDiskd(t)
	keys, defaults := daemonKeys(t, diskd)
	conf := confEntries(t)
	// Defaults that depend on the machine or on who runs the test.
	hostDependent := map[string]bool{"node_name": true}
	if os.Geteuid() != 0 {
		hostDependent["state_dir"], hostDependent["socket"], hostDependent["dbus"] = true, true, true
	}
	for _, k := range keys {
		v, ok := conf[k]
		switch {
		case !ok:
			t.Errorf("diskd.conf does not document %q (diskd's default: %s)", k, defaults[k])
		case defaults[k] == "":
			if v != "[]" && v != `""` {
				t.Errorf("diskd.conf: %s = %s, but diskd prints no default (want [] or \"\")", k, v)
			}
		case !hostDependent[k] && v != defaults[k]:
			t.Errorf("diskd.conf: %s = %s, but diskd's default is %s", k, v, defaults[k])
		}
	}
	for k := range conf {
		if !slices.Contains(keys, k) {
			t.Errorf("diskd.conf documents %q, which diskd does not know", k)
		}
	}

	// Uncommented, the file must parse (diskd rejects unknown keys).
	b, _ := os.ReadFile("diskd.conf")
	uncommented := regexp.MustCompile(`(?m)^# (\[[a-z0-9_]+\]|[a-z0-9_]+ = )`).ReplaceAllString(string(b), "$1")
	p := filepath.Join(t.TempDir(), "diskd.conf")
	if err := os.WriteFile(p, []byte(uncommented), 0o644); err != nil {
		t.Fatal(err)
	}
	runIn(t, ".", diskd, "--config", p, "--print-config")
}

// TestCopyrightCoversModules: every module linked into the packaged
// binaries is named in the copyright file with its license, so a new
// dependency cannot ship unaccounted for.
func TestCopyrightCoversModules(t *testing.T) {
	testutil.RequiresTool(t, "go")
	_, _, stage := buildPackages(t)
	b, err := os.ReadFile("copyright")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, bin := range []string{"usr/bin/diskd", "usr/bin/diskctl"} {
		out := runIn(t, ".", "go", "version", "-m", filepath.Join(stage, bin))
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "dep" {
				continue
			}
			n++
			if !strings.Contains(string(b), "\n       "+f[1]+"/*\n") && !strings.Contains(string(b), "Files: "+f[1]+"/*\n") {
				t.Errorf("%s links %s, which packaging/copyright does not list", bin, f[1])
			}
		}
	}
	if n == 0 {
		t.Fatal("go version -m found no modules in the binaries")
	}
}
