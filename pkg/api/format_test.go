package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/diskd/diskd/pkg/disk"
)

// writeDisksTabwriter is WriteDisks as it was written with text/tabwriter
// and fmt, which the fast layout must reproduce byte for byte.
func writeDisksTabwriter(ds []disk.Disk) []byte {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tDEVICE\tLABEL\tUUID\tTYPE\tSIZE\tMOUNTPOINTS")
	for _, d := range ds {
		mounts := strings.Join(d.Mounts, ",")
		if !d.Present {
			mounts = "(gone since " + d.LastSeen.Local().Format(time.DateTime) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(d.Host), cell(d.Device), cell(d.Label),
			cell(d.UUID), cell(d.Type), humanSizeFmt(d.Size), cell(mounts))
	}
	tw.Flush()
	return b.Bytes()
}

func humanSizeFmt(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	v := float64(b) / float64(div)
	if v >= 10 || v == float64(int(v)) {
		return fmt.Sprintf("%.0f%c", v, "KMGTPE"[exp])
	}
	return fmt.Sprintf("%.1f%c", v, "KMGTPE"[exp])
}

func TestWriteDisksMatchesTabwriter(t *testing.T) {
	words := []string{"", "a", "BACKUP", "é", "日本語", "e\u0301", "\x1b[2J", "\t", "\xff", "\\", "\u202e", "\U0001F600",
		strings.Repeat("x", 300), "a b", "\v\f"}
	rng := rand.New(rand.NewPCG(3, 4))
	pick := func() string { return words[rng.IntN(len(words))] + words[rng.IntN(len(words))] }
	for n := range 40 {
		var ds []disk.Disk
		for range n {
			ds = append(ds, disk.Disk{Host: pick(), Device: pick(), Label: pick(), UUID: pick(), Type: pick(),
				Size: rng.Uint64() >> rng.IntN(64), Mounts: []string{pick(), pick()}[:rng.IntN(3)], Present: rng.IntN(2) == 0,
				LastSeen: time.Unix(rng.Int64N(2e9), 0)})
		}
		var got bytes.Buffer
		WriteDisks(&got, ds)
		if want := writeDisksTabwriter(ds); !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("%d disks:\n got %q\nwant %q", n, got.Bytes(), want)
		}
	}
}

func TestHumanSizeMatchesFmt(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	sizes := []uint64{0, 1, 1023, 1024, 1025, 1536, 10239, 10240, 1 << 30, 1<<30 + 1, 1<<63 + 12345, ^uint64(0)}
	for range 10000 {
		sizes = append(sizes, rng.Uint64()>>rng.IntN(64))
	}
	for _, s := range sizes {
		if got, want := HumanSize(s), humanSizeFmt(s); got != want {
			t.Errorf("HumanSize(%d) = %q, want %q", s, got, want)
		}
	}
}

// TestRequestAppendJSON: a request is written as encoding/json writes it,
// for every field set or not, with hostile strings.
func TestRequestAppendJSON(t *testing.T) {
	strs := []string{"", "where", "LABEL-1", `"q"\`, "<&>", "\x00\x1f\x7f", "\xff\xfe", "\u2028é日本", "\ufffd"}
	for i, s := range strs {
		for mask := range 1 << 6 {
			r := Request{Cmd: s}
			if mask&1 != 0 {
				r.Arg = strs[(i+1)%len(strs)]
			}
			if mask&2 != 0 {
				r.Host = strs[(i+2)%len(strs)]
			}
			if mask&4 != 0 {
				r.Label = strs[(i+3)%len(strs)]
			}
			r.Present, r.RW, r.Force = mask&8 != 0, mask&16 != 0, mask&32 != 0
			want, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.AppendJSON(nil); string(got) != string(want) {
				t.Errorf("%#v:\n got %s\nwant %s", r, got, want)
			}
		}
	}
}
