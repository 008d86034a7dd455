package blkid

import (
	"flag"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskd/diskd/pkg/testutil"
)

var capture = flag.Bool("capture", false, "rewrite testdata/*.export from real blkid on loop devices (root), then run with -update")

// labelDisk is one loop image made with a real mkfs, its label chosen to
// exercise blkid's output: spaces, quotes, backslashes, shell
// metacharacters, UTF-8, bytes that are not UTF-8, newlines.
type labelDisk struct {
	name    string
	sizeMiB int
	mkfs    []string
	want    Record // without Device
}

var labelDisks = []labelDisk{
	{
		name: "ext4-quotes", sizeMiB: 64,
		mkfs: []string{"mkfs.ext4", "-q", "-U", "11111111-1111-4111-8111-111111111111", "-L", `a b "c" \d`},
		want: Record{UUID: "11111111-1111-4111-8111-111111111111", Label: `a b "c" \d`, Type: "ext4", Usage: "filesystem"},
	},
	{
		name: "ext4-latin1", sizeMiB: 64,
		mkfs: []string{"mkfs.ext4", "-q", "-U", "22222222-2222-4222-8222-222222222222", "-L", "caf\xe9 \xff$`<>"},
		want: Record{UUID: "22222222-2222-4222-8222-222222222222", Label: "caf\xe9 \xff$`<>", Type: "ext4", Usage: "filesystem"},
	},
	{
		name: "ext4-newlines", sizeMiB: 64,
		mkfs: []string{"mkfs.ext4", "-q", "-U", "33333333-3333-4333-8333-333333333333", "-L", "x\ny\n\nz=1"},
		want: Record{UUID: "33333333-3333-4333-8333-333333333333", Label: "x\ny\n\nz=1", Type: "ext4", Usage: "filesystem"},
	},
	{
		// "FILM-2024" prints as "FILM-2024" and "M-2" is also how blkid
		// escapes the byte 0xB2: only the raw output can say which.
		name: "ext4-ambiguous", sizeMiB: 64,
		mkfs: []string{"mkfs.ext4", "-q", "-U", "66666666-6666-4666-8666-666666666666", "-L", "FILM-2024^J\xb2"},
		want: Record{UUID: "66666666-6666-4666-8666-666666666666", Label: "FILM-2024^J\xb2", Type: "ext4", Usage: "filesystem"},
	},
	{
		// A hostile stick: with raw values its label would forge two
		// devices, a blank line, terminal escapes, C1 CSI and bytes that
		// are not UTF-8.
		name: "btrfs-hostile", sizeMiB: 128,
		mkfs: []string{"mkfs.btrfs", "-q", "-f", "-U", "77777777-7777-4777-8777-777777777777", "-L", hostileLabel},
		want: Record{UUID: "77777777-7777-4777-8777-777777777777", Label: hostileLabel, Type: "btrfs", Usage: "filesystem"},
	},
	{
		// Every byte but NUL (which ends a label) and 0xFF (mkfs.btrfs
		// keeps 254 of these 255): checks escapeByte against real blkid.
		name: "btrfs-allbytes", sizeMiB: 128,
		mkfs: []string{"mkfs.btrfs", "-q", "-f", "-U", "88888888-8888-4888-8888-888888888888", "-L", allBytes},
		want: Record{UUID: "88888888-8888-4888-8888-888888888888", Label: allBytes, Type: "btrfs", Usage: "filesystem"},
	},
	{
		name: "vfat", sizeMiB: 64,
		mkfs: []string{"mkfs.vfat", "-i", "1234ABCD", "-n", "MY 'DISK$"},
		want: Record{UUID: "1234-ABCD", Label: "MY 'DISK$", Type: "vfat", Usage: "filesystem"},
	},
	{
		name: "xfs", sizeMiB: 320, // mkfs.xfs refuses less than 300 MiB
		mkfs: []string{"mkfs.xfs", "-q", "-m", "uuid=44444444-4444-4444-8444-444444444444", "-L", `é "y" \z`},
		want: Record{UUID: "44444444-4444-4444-8444-444444444444", Label: `é "y" \z`, Type: "xfs", Usage: "filesystem"},
	},
}

// hostileLabel is what issue 10's USB stick carried, and more.
const hostileLabel = "inj\nDEVNAME=/dev/loop200\nLABEL=ROOT\nUUID=forged\n\nDEVNAME=/dev/loop201\nTYPE=ext4\n" +
	"\x1b[2J\xc2\x9b31m FILM-2024 M-A ^J \\x41 \xff\x7f END"

var allBytes = func() string {
	b := make([]byte, 0, 254)
	for c := 1; c < 255; c++ {
		b = append(b, byte(c))
	}
	return string(b)
}()

const (
	gptDiskUUID    = "5a5a5a5a-0000-4000-8000-000000000001"
	gptPart1UUID   = "5a5a5a5a-0000-4000-8000-0000000000a1"
	gptPart2UUID   = "5a5a5a5a-0000-4000-8000-0000000000a2"
	gptPart2FSUUID = "55555555-5555-4555-8555-555555555555"
)

// setupLabelDisks makes and attaches every labelDisk; it returns their
// /dev paths in the same order.
func setupLabelDisks(t *testing.T) []string {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "blkid", "losetup", "mkfs.ext4", "mkfs.vfat", "mkfs.xfs", "mkfs.btrfs")
	devs := make([]string, len(labelDisks))
	for i, d := range labelDisks {
		devs[i] = testutil.AttachLoop(t, testutil.LoopImage(t, d.sizeMiB, d.mkfs...))
	}
	return devs
}

// setupGPT makes a GPT disk image with two partitions, the first without a
// filesystem (so blkid knows it only by PARTUUID and PARTLABEL), the
// second with ext4. It returns the disk and partition /dev paths.
func setupGPT(t *testing.T) (string, []string) {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "blkid", "losetup", "sfdisk", "partx", "mkfs.ext4")
	img := testutil.LoopImage(t, 64)
	script := "label: gpt\nlabel-id: " + gptDiskUUID + "\n" +
		"size=16MiB, type=L, uuid=" + gptPart1UUID + ", name=\"part one\"\n" +
		"size=16MiB, type=L, uuid=" + gptPart2UUID + "\n"
	cmd := exec.Command("sfdisk", "-q", img)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	disk, parts := testutil.AttachLoopParts(t, img)
	if len(parts) != 2 {
		t.Fatalf("want 2 partitions on %s, got %v", disk, parts)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-U", gptPart2FSUUID, parts[1]).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v: %s", parts[1], err, out)
	}
	return disk, parts
}

func byDevice(recs []Record) map[string]Record {
	m := make(map[string]Record, len(recs))
	for _, r := range recs {
		m[r.Device] = r
	}
	return m
}

func TestRealScanAllAndProbe(t *testing.T) {
	devs := setupLabelDisks(t)
	r := &Runner{Logger: testLogger(t)}
	ctx := t.Context()
	recs, err := r.ScanAll(ctx)
	if err != nil {
		t.Fatalf("ScanAll: %v", err)
	}
	scanned := byDevice(recs)
	// The hostile label forges nothing: its UUID=forged and TYPE=ext4
	// lines stay inside the label.
	for _, rec := range recs {
		if rec.UUID == "forged" || rec.Label == "ROOT" {
			t.Errorf("ScanAll returned a forged record %+q", rec)
		}
	}
	for i, d := range labelDisks {
		want := d.want
		want.Device = devs[i]
		t.Run(d.name, func(t *testing.T) {
			if got, ok := scanned[devs[i]]; !ok {
				t.Errorf("ScanAll did not list %s", devs[i])
			} else if got != want {
				t.Errorf("ScanAll:\n got %+q\nwant %+q", got, want)
			}
			got, found, err := r.Probe(ctx, devs[i])
			if err != nil || !found {
				t.Fatalf("Probe(%s) = found %v, err %v", devs[i], found, err)
			}
			if got != want {
				t.Errorf("Probe:\n got %+q\nwant %+q", got, want)
			}
		})
	}
}

func TestRealPartitions(t *testing.T) {
	disk, parts := setupGPT(t)
	r := &Runner{Logger: testLogger(t)}
	ctx := t.Context()
	want := []Record{
		{Device: parts[0], PartUUID: gptPart1UUID, PartLabel: "part one"},
		{Device: parts[1], PartUUID: gptPart2UUID, UUID: gptPart2FSUUID, Type: "ext4", Usage: "filesystem"},
	}
	recs, err := r.ScanAll(ctx)
	if err != nil {
		t.Fatalf("ScanAll: %v", err)
	}
	scanned := byDevice(recs)
	for _, w := range want {
		if got := scanned[w.Device]; got != w {
			t.Errorf("ScanAll %s:\n got %+q\nwant %+q", w.Device, got, w)
		}
		got, found, err := r.Probe(ctx, w.Device)
		if err != nil || !found || got != w {
			t.Errorf("Probe %s: found %v, err %v\n got %+q\nwant %+q", w.Device, found, err, got, w)
		}
	}
	// The whole disk holds only a partition table: found, but no filesystem.
	got, found, err := r.Probe(ctx, disk)
	if err != nil || !found || got != (Record{Device: disk}) {
		t.Errorf("Probe %s: found %v, err %v, %+q; want an empty record", disk, found, err, got)
	}
}

// TestRealUsage: for signatures that are not filesystems, the usage the
// parser derives from TYPE (the cached scan prints no USAGE) is the USAGE
// libblkid's low-level probe prints for the same device.
func TestRealUsage(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "blkid", "losetup", "mkswap", "mke2fs")
	for _, c := range []struct {
		name, typ, usage string
		mkfs             []string
	}{
		{"swap", "swap", "other", []string{"mkswap", "-q"}},
		// An ext3/4 external journal: TYPE=jbd, which is not mountable.
		{"journal", "jbd", "other", []string{"mke2fs", "-q", "-F", "-O", "journal_dev"}},
		{"ext2", "ext2", "filesystem", []string{"mke2fs", "-q", "-F", "-t", "ext2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dev := testutil.AttachLoop(t, testutil.LoopImage(t, 16, c.mkfs...))
			r := &Runner{Logger: testLogger(t)}
			probed, found, err := r.Probe(t.Context(), dev)
			if err != nil || !found {
				t.Fatalf("Probe(%s) = found %v, err %v", dev, found, err)
			}
			recs, err := r.ScanAll(t.Context())
			if err != nil {
				t.Fatalf("ScanAll: %v", err)
			}
			scanned, ok := byDevice(recs)[dev]
			if !ok {
				t.Fatalf("ScanAll did not list %s", dev)
			}
			if probed.Type != c.typ || probed.Usage != c.usage {
				t.Errorf("blkid -p: TYPE=%q USAGE=%q, want %q %q", probed.Type, probed.Usage, c.typ, c.usage)
			}
			if scanned.Type != probed.Type || scanned.Usage != probed.Usage {
				t.Errorf("ScanAll derived TYPE=%q usage %q; blkid -p says TYPE=%q USAGE=%q", scanned.Type, scanned.Usage, probed.Type, probed.Usage)
			}
		})
	}
}

// TestRealProbeNothingFound: a blank device makes blkid exit with status 2,
// which is "nothing there", not an error.
func TestRealProbeNothingFound(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "blkid", "losetup")
	dev := testutil.AttachLoop(t, testutil.LoopImage(t, 8))
	r := &Runner{Logger: testLogger(t)}
	for _, d := range []string{dev, "/dev/diskd-test-does-not-exist"} {
		rec, found, err := r.Probe(t.Context(), d)
		if err != nil || found || rec != (Record{}) {
			t.Errorf("Probe(%s) = %+q, found %v, err %v; want nothing found", d, rec, found, err)
		}
	}
}

// TestCaptureFixtures regenerates testdata/*.export from real blkid, with
// the same arguments the Runner uses. It only runs with -capture; rerun
// with -update afterwards and review the golden diff.
func TestCaptureFixtures(t *testing.T) {
	if !*capture {
		t.Skip("run with -capture to rewrite the fixtures from real blkid")
	}
	devs := setupLabelDisks(t)
	disk, parts := setupGPT(t)
	blkid := func(args ...string) []byte {
		out, err := exec.Command("blkid", args...).Output()
		if err != nil {
			t.Fatalf("blkid %v: %v", args, err)
		}
		return out
	}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join("testdata", name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Each fixture in both forms the Runner reads: escaped (.export) and
	// raw (.raw, with -d), from the same command line otherwise.
	both := func(name string, args ...string) {
		write(name+".export", blkid(args...))
		write(name+".raw", blkid(append([]string{"-d"}, args...)...))
	}
	scan := []string{"-c", "/dev/null", "-o", "export"}
	probe := []string{"-p", "-o", "export"}
	both("scan-labels", append(scan, devs...)...)
	for i, d := range labelDisks {
		both("probe-"+d.name, append(probe, devs[i])...)
	}
	both("scan-gpt", append(append(scan, disk), parts...)...)
	both("probe-gpt-disk", append(probe, disk)...)
	both("probe-gpt-p1", append(probe, parts[0])...)
	both("probe-gpt-p2", append(probe, parts[1])...)
	write("empty.export", nil)
	write("empty.raw", nil)
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}
