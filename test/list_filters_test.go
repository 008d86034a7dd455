package test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/testutil"
)

// TestListFiltersThroughRealParts: loop devices with labels, one of them
// detached, listed by the real daemon and diskctl with --present and
// --label; the JSON form is the bytes encoding/json gives for the same
// disks (the daemon writes cached encodings, diskctl passes them on); the
// table is decoded and laid out by diskctl; a bad glob is refused.
func TestListFiltersThroughRealParts(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid")
	one := testutil.AttachLoop(t, testutil.LoopImage(t, 16, "mkfs.ext4", "-q", "-L", "FLT-ONE"))
	twoImg := testutil.LoopImage(t, 16, "mkfs.ext4", "-q", "-L", "FLT-TWO")
	two := testutil.AttachLoop(t, twoImg)
	other := testutil.AttachLoop(t, testutil.LoopImage(t, 16, "mkfs.ext4", "-q", "-L", "other"))
	d := testutil.StartDaemon(t, testutil.DaemonOptions{Args: []string{"--devices", one, "--devices", two, "--devices", other}})
	testutil.DetachLoop(t, twoImg)
	testutil.Eventually(t, 10*time.Second, "FLT-TWO not present", func() bool {
		g := find(listJSON(t, d), "FLT-TWO")
		return g != nil && !g.Present
	})

	labels := func(args ...string) []string {
		t.Helper()
		out := d.MustCtl(append([]string{"list", "--json"}, args...)...)
		var ds []disk.Disk
		if err := json.Unmarshal([]byte(out), &ds); err != nil {
			t.Fatalf("list %v: %v\n%s", args, err, out)
		}
		// Byte-identical to encoding/json's form of the same disks.
		if again, _ := json.Marshal(ds); string(again)+"\n" != out {
			t.Errorf("list %v is not encoding/json's bytes:\n got %s\nwant %s", args, out, again)
		}
		var ls []string
		for _, x := range ds {
			ls = append(ls, x.Label)
		}
		slices.Sort(ls)
		return ls
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"FLT-ONE", "FLT-TWO", "other"}},
		{[]string{"--present"}, []string{"FLT-ONE", "other"}},
		{[]string{"--label", "FLT-*"}, []string{"FLT-ONE", "FLT-TWO"}},
		{[]string{"--label", "FLT-*", "--present"}, []string{"FLT-ONE"}},
		{[]string{"--label", "[a-z]*"}, []string{"other"}},
		{[]string{"--label", "nothing"}, nil},
	} {
		if got := labels(tc.args...); !slices.Equal(got, tc.want) {
			t.Errorf("list --json %v = %v, want %v", tc.args, got, tc.want)
		}
	}

	// The table: the same disks, one line each after the header.
	table := d.MustCtl("list", "--label", "FLT-*")
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "HOST") || !strings.Contains(table, one) ||
		!strings.Contains(table, "FLT-TWO") || !strings.Contains(table, "(gone since ") || strings.Contains(table, "other") {
		t.Errorf("list --label FLT-*:\n%s", table)
	}

	for _, bad := range []string{"[", strings.Repeat("*", 65)} {
		out, errOut, code := d.Ctl("list", "--label", bad)
		if code != 2 || out != "" || !strings.Contains(errOut, "label glob") {
			t.Errorf("list --label %q: exit %d, %q, %q", bad, code, out, errOut)
		}
	}
}
