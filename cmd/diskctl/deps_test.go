package main

import (
	"os/exec"
	"strings"
	"testing"
)

// allowedDeps is everything diskctl may link beyond the standard library:
// the client side of the socket and bus APIs, their shared types, and the
// CLI's own libraries. It is an allowlist, so a new daemon package (or a
// new dependency of a client package) fails here until someone decides it
// belongs in a thin client.
var allowedDeps = map[string]string{
	"github.com/diskd/diskd/cmd/diskctl":     "",
	"github.com/diskd/diskd/cmd/diskctl/cli": "the commands",
	"github.com/diskd/diskd/pkg/api":         "the local API's types and formats",
	"github.com/diskd/diskd/pkg/disk":        "the domain types",
	"github.com/diskd/diskd/pkg/localsock":   "where the socket is, and dialling it",
	"github.com/diskd/diskd/pkg/ctlclient":   "the socket API's client",
	"github.com/diskd/diskd/dbus":            "the D-Bus contract: names, property mapping",
	"github.com/diskd/diskd/pkg/dbusclient":  "the D-Bus API's client (diskctl --bus)",
	"github.com/godbus/dbus/v5":              "D-Bus",
	"github.com/godbus/dbus/v5/introspect":   "D-Bus",
	"github.com/spf13/cobra":                 "commands and flags",
	"github.com/spf13/pflag":                 "commands and flags",
	"github.com/chzyer/readline":             "the interactive shell",
	"golang.org/x/term":                      "is stdout a terminal",
	"golang.org/x/sys/unix":                  "peer credentials, terminal ioctls",
}

// TestDiskctlLinksNoDaemonCode: diskctl is a thin client; it links the
// standard library and allowedDeps, nothing else (no store, scanner, blkid,
// uevents, multicast, bbolt, ...).
func TestDiskctlLinksNoDaemonCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("suspiciously few dependencies: %v", deps)
	}
	linked := map[string]bool{}
	for _, d := range deps {
		first, _, _ := strings.Cut(d, "/")
		if !strings.Contains(first, ".") {
			continue // the standard library (and its vendored packages)
		}
		linked[d] = true
		if _, ok := allowedDeps[d]; !ok {
			t.Errorf("diskctl links %s, which is not in allowedDeps: a daemon package, or a new dependency to decide on", d)
		}
	}
	// The allowlist stays exact: a package diskctl stopped linking leaves it.
	for d := range allowedDeps {
		if !linked[d] {
			t.Errorf("allowedDeps lists %s, which diskctl does not link: remove it", d)
		}
	}
}
