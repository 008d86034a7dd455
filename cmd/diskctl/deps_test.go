package main

import (
	"os/exec"
	"strings"
	"testing"
)

// diskctl is a thin client: it must not link the daemon's machinery.
func TestDiskctlLinksNoDaemonCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/diskd/diskd/pkg/store",
		"github.com/diskd/diskd/pkg/scanner",
		"github.com/diskd/diskd/pkg/blkid",
		"github.com/diskd/diskd/pkg/uevent",
		"github.com/diskd/diskd/pkg/mountinfo",
		"github.com/diskd/diskd/pkg/control",
		"github.com/diskd/diskd/pkg/peer",
		"github.com/diskd/diskd/pkg/wire",
		"github.com/diskd/diskd/pkg/dbusapi",
		"github.com/pilebones/go-udev",
		"golang.org/x/net/ipv4",
		"golang.org/x/net/ipv6",
		"go.etcd.io/bbolt",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("suspiciously few dependencies: %v", deps)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("diskctl links %s", d)
			}
		}
	}
}
