package control

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/ctlclient"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
)

// filterStore holds disks on two hosts, present and gone, labelled and not.
func filterStore(t *testing.T) string {
	t.Helper()
	st := store.New(store.Options{Local: disk.Node{ID: "00000000000000000000000000000001", Name: "here"}})
	st.SetLocal([]disk.Disk{
		{Name: "loop0", Device: "/dev/loop0", Label: "BACKUP-1", UUID: "U0"},
		{Name: "loop1", Device: "/dev/loop1", Label: "photos", UUID: "U1"},
		{Name: "loop2", Device: "/dev/loop2", UUID: "U2"},
		{Name: "loop3", Device: "/dev/loop3", Label: "My Disk", UUID: "U3"},
	})
	st.SetLocal([]disk.Disk{ // loop1 goes
		{Name: "loop0", Device: "/dev/loop0", Label: "BACKUP-1", UUID: "U0"},
		{Name: "loop2", Device: "/dev/loop2", UUID: "U2"},
		{Name: "loop3", Device: "/dev/loop3", Label: "My Disk", UUID: "U3"},
	})
	st.ApplyPeer(disk.Node{ID: peerID, Name: "there"}, []disk.Disk{{Name: "sdb1", Device: "/dev/sdb1", Label: "BACKUP-2", UUID: "U4"}})
	_, path := serveWith(t, st, Config{})
	return path
}

// TestListFilters: --present, --label and --host, alone and together, in
// the JSON form (diskctl's) and the text form (socat's), give the same
// disks, in list order; bad globs are refused in both.
func TestListFilters(t *testing.T) {
	path := filterStore(t)
	c := dial(t, path)
	ctx := context.Background()
	for _, tc := range []struct {
		f    api.ListFilter
		text string
		want []string // devices
	}{
		{api.ListFilter{}, "list", []string{"/dev/loop0", "/dev/loop1", "/dev/loop2", "/dev/loop3", "/dev/sdb1"}},
		{api.ListFilter{Present: true}, "list --present", []string{"/dev/loop0", "/dev/loop2", "/dev/loop3", "/dev/sdb1"}},
		{api.ListFilter{Label: "BACKUP-*"}, "list --label BACKUP-*", []string{"/dev/loop0", "/dev/sdb1"}},
		{api.ListFilter{Label: "*"}, "list --label *", []string{"/dev/loop0", "/dev/loop1", "/dev/loop3", "/dev/sdb1"}},
		{api.ListFilter{Label: "p[a-z]otos"}, "list --label p[a-z]otos", []string{"/dev/loop1"}},
		{api.ListFilter{Label: "p[a-z]otos", Present: true}, "list --label p[a-z]otos --present", nil},
		{api.ListFilter{Label: "My?Disk"}, "list --label My?Disk", []string{"/dev/loop3"}},
		{api.ListFilter{Label: "My Disk"}, "", []string{"/dev/loop3"}}, // a space: the JSON form only
		{api.ListFilter{Label: "BACKUP-*", Host: "there"}, "list --label BACKUP-* there", []string{"/dev/sdb1"}},
		{api.ListFilter{Present: true, Host: "here"}, "list --present here", []string{"/dev/loop0", "/dev/loop2", "/dev/loop3"}},
		{api.ListFilter{Label: "nothing*"}, "list --label nothing*", nil},
	} {
		ds, err := c.List(ctx, tc.f)
		if err != nil {
			t.Fatalf("%+v: %v", tc.f, err)
		}
		var got []string
		for _, d := range ds {
			got = append(got, d.Device)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("List(%+v) = %v, want %v", tc.f, got, tc.want)
		}
		if tc.text == "" {
			continue
		}
		reply := text(t, path, tc.text)[1]
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(reply), "\n")[1:] { // after the header
			lines = append(lines, strings.Fields(l)[1])
		}
		if !slices.Equal(lines, tc.want) {
			t.Errorf("%q = %v, want %v\n%s", tc.text, lines, tc.want, reply)
		}
	}
	long := strings.Repeat("*", api.MaxGlobBytes+1)
	for _, tc := range []struct{ glob, want string }{
		{"[", "malformed"}, {"BACK[UP", "malformed"}, {`BACKUP\`, "malformed"},
		{long, "longer than 64 bytes"},
	} {
		_, err := c.List(ctx, api.ListFilter{Label: tc.glob})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("List(label %q) err = %v, want %q", tc.glob, err, tc.want)
		}
		if len(err.Error()) > 2*api.MaxQuoted+100 {
			t.Errorf("the refusal quotes the whole glob: %d bytes", len(err.Error()))
		}
		if reply := text(t, path, "list --label "+tc.glob)[1]; !strings.HasPrefix(reply, "error: label glob") || !strings.Contains(reply, tc.want) {
			t.Errorf("text list --label %q = %q", tc.glob, reply)
		}
	}
	if reply := text(t, path, "list --label")[1]; reply != "error: usage: list [--present] [--label GLOB] [HOST]\n" {
		t.Errorf("list --label without a glob = %q", reply)
	}
	// The JSON form of a filtered list is the same bytes as the
	// corresponding part of the whole list.
	var all, part []json.RawMessage
	whole := jsonList(t, c, api.ListFilter{})
	json.Unmarshal(whole, &all)
	some := jsonList(t, c, api.ListFilter{Label: "BACKUP-*"})
	json.Unmarshal(some, &part)
	if len(part) != 2 || string(part[0]) != string(all[0]) || string(part[1]) != string(all[4]) {
		t.Errorf("filtered JSON differs from the whole list's:\n%s\n%s", some, whole)
	}
}

func jsonList(t *testing.T, c *ctlclient.Client, f api.ListFilter) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := c.ListJSONTo(context.Background(), f, &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestLabelGlobWorstCase: the longest glob built to make path.Match work
// hardest, against the longest labels the peer protocol lets in, on a
// table of 20,000 disks, still answers (the cost is bounded by the glob
// and label bounds; the figure is in BenchmarkLabelGlobWorstCase).
func TestLabelGlobWorstCase(t *testing.T) {
	st := worstGlobStore(20_000)
	_, path := serveWith(t, st, Config{WriteTimeout: time.Minute})
	c := dial(t, path)
	ds, err := c.List(context.Background(), api.ListFilter{Label: worstGlob})
	if err != nil || len(ds) != 0 {
		t.Fatalf("worst glob: %d disks, %v", len(ds), err)
	}
}
