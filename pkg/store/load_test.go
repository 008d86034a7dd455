package store

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/diskd/diskd/pkg/disk"
)

// trickyStore holds rows whose records exercise the decoder: escapes,
// multi-byte and invalid UTF-8 in every kind of string, clones, history
// (a disk moved between nodes and kernel names), a since that is not
// the first sighting, times with zones, and a peer's rows.
func trickyStore(t *testing.T) (*Store, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.FixedZone("", 5400))}
	s := New(Options{Local: disk.Node{ID: localID, Name: "here"}, Now: c.now, MaxPeers: 4})
	odd := []string{`a "quoted" \ label`, "<&> \n\t\r\b\f\x01\x7f", "é 日本 \U0001F600", "\u2028\u2029", "bad \xff utf8", "/a b"}
	var local []disk.Disk
	for i, v := range odd {
		n := fmt.Sprintf("sd%c", 'a'+i)
		local = append(local, disk.Disk{Name: n, Device: "/dev/" + v, Label: v, PartLabel: v, UUID: fmt.Sprintf("U-%d", i),
			Type: "ext4", Usage: "filesystem", MajMin: fmt.Sprintf("8:%d", i), Size: uint64(i) << 40, ReadOnly: i%2 == 0,
			Removable: i%3 == 0, Mounts: []string{v, "/srv/" + n}})
	}
	local = append(local, disk.Disk{Name: "sdz", Device: "/dev/sdz", PartUUID: "PART-Z", Size: 1}, // partuuid identity
		disk.Disk{Name: "sdy", Device: "/dev/sdy", Size: 2}) // weak identity
	s.SetLocal(local)
	c.add(time.Minute)
	// Moves: U-0 to another kernel name, U-1 to a peer; a clone of U-2.
	moved := slices.Clone(local[2:])
	moved = append(moved, disk.Disk{Name: "sdq", Device: "/dev/sdq", Label: odd[0], UUID: "U-0", Mounts: []string{}},
		disk.Disk{Name: "sdr", Device: "/dev/sdr", Label: "clone", UUID: "U-2"})
	s.SetLocal(moved)
	c.add(time.Minute)
	s.ApplyPeer(disk.Node{ID: peerID, Name: odd[2], Addresses: []string{"10.0.0.2"}},
		[]disk.Disk{{Name: "sdb", Device: "/dev/sdb", Label: odd[1], UUID: "U-1", Host: odd[0]}})
	c.add(time.Minute)
	s.SetLocal(slices.DeleteFunc(moved, func(d disk.Disk) bool { return d.Name == "sdy" }))
	if !slices.ContainsFunc(s.Disks(nil), func(d disk.Disk) bool { return d.NotUnique }) {
		t.Fatal("no clones")
	}
	// As a restart has it: the peer offline, its disks not present.
	s.SetPeerOffline(peerID)
	return s, c
}

// TestLoadDecodesAsEncodingJSON: every record of a state file decodes by
// the fast path to what encoding/json gives (so the parser and
// rowRecord's tags agree), and the store loaded from it is the one
// saved: its table, history, lists and where answers.
func TestLoadDecodesAsEncodingJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, _, err := OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	s, c := trickyStore(t)
	if err := s.Flush(db); err != nil {
		t.Fatal(err)
	}
	n := 0
	err = db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRows).ForEach(func(k, v []byte) error {
			n++
			if _, _, _, ok := disk.ParseRecordJSON(v); !ok {
				t.Errorf("row %s: left to encoding/json: %s", k, v)
			}
			var got, want rowRecord
			if err := decodeRow(slices.Clone(v), &got); err != nil {
				t.Errorf("row %s: %v", k, err)
			}
			if err := json.Unmarshal(v, &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("row %s:\n got %+v\nwant %+v", k, got, want)
			}
			return nil
		})
	})
	if err != nil || n < 8 {
		t.Fatalf("%d rows read: %v", n, err)
	}
	db.Close()

	s2, db, aside, err := OpenStore(path, Options{Local: disk.Node{ID: localID, Name: "here"}, Now: c.now, MaxPeers: 4})
	if err != nil || aside != "" {
		t.Fatal(err, aside)
	}
	defer db.Close()
	if got, want := savedView(s2, "U-0", "U-1", "U-2", "clone"), savedView(s, "U-0", "U-1", "U-2", "clone"); got != want {
		t.Errorf("loaded store:\n%s\nwant\n%s", got, want)
	}
	checkDerived(t, s2, []string{"U-0", "U-2", "clone", "bad \xff utf8", "/dev/sdq"}, "after the load")
}

// TestOpenStoreMovesDamagedAside: a state file holding a record that does
// not decode is moved aside at open and the store starts empty on a new
// file, as one bbolt cannot open is; a file it reads is kept.
func TestOpenStoreMovesDamagedAside(t *testing.T) {
	for _, tc := range []struct {
		name   string
		bucket []byte
		key, v string
	}{
		{"row not JSON", bucketRows, "uuid:x", `{"disk":`},
		{"row of the wrong type", bucketRows, "uuid:x", `{"disk":{"name":"sdx","size":"big"}}`},
		{"row an array", bucketRows, "uuid:x", `[]`},
		{"row empty", bucketRows, "uuid:x", ``},
		{"node not JSON", bucketNodes, string(peerID), `{"id":`},
		{"", nil, "", ""}, // undamaged
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			db, _, err := OpenDB(path)
			if err != nil {
				t.Fatal(err)
			}
			s, _ := newTestStore(t)
			s.SetLocal([]disk.Disk{stick("loop0", "A", "a")})
			if err := s.Flush(db); err != nil {
				t.Fatal(err)
			}
			if tc.bucket != nil {
				if err := db.bolt.Update(func(tx *bolt.Tx) error {
					return tx.Bucket(tc.bucket).Put([]byte(tc.key), []byte(tc.v))
				}); err != nil {
					t.Fatal(err)
				}
			}
			db.Close()
			s, db, aside, err := OpenStore(path, Options{Local: disk.Node{ID: localID, Name: "here"}})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if tc.bucket == nil {
				if aside != "" || s.Counts().Disks != 1 {
					t.Fatalf("undamaged file moved aside (%q) or not loaded: %+v", aside, s.Counts())
				}
				return
			}
			if aside == "" || !strings.HasPrefix(aside, path+".corrupt-") {
				t.Fatalf("damaged file not moved aside: %q", aside)
			}
			if _, err := os.Stat(aside); err != nil {
				t.Error(err)
			}
			if c := s.Counts(); c.Disks != 0 || c.Nodes > 1 {
				t.Errorf("store not empty after a damaged file: %+v", c)
			}
			s.SetLocal([]disk.Disk{stick("loop1", "B", "b")})
			if err := s.Flush(db); err != nil {
				t.Errorf("new file: %v", err)
			}
		})
	}
}

// saveState writes s to a new state file and returns its path.
func saveState(tb testing.TB, s *Store) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "state.db")
	db, _, err := OpenDB(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	if err := s.Flush(db); err != nil {
		tb.Fatal(err)
	}
	return path
}

// savedView prints a store as the state file holds it: every disk, and
// the history of each of queries. Invalid UTF-8 is saved, as JSON, as
// U+FFFD.
func savedView(s *Store, queries ...string) string {
	var b strings.Builder
	for _, d := range s.Disks(nil) {
		j, _ := json.Marshal(d)
		fmt.Fprintf(&b, "%s %s %s %s\n", d.Row, j, d.FirstSeen.Location(), d.LastSeen.Location())
	}
	for _, q := range queries {
		fmt.Fprintf(&b, "history %s: %+v\n", q, s.History(q))
	}
	return strings.ToValidUTF8(strings.ReplaceAll(b.String(), `\ufffd`, "\uFFFD"), "\uFFFD")
}

// TestLoadPacksInChunks: a load whose nodes' packs take many chunks, one
// row longer than a chunk, and enough arena for the packing to collect
// (packGCEvery): the lists and the table are the saved store's.
func TestLoadPacksInChunks(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	opts := Options{Local: disk.Node{ID: localID, Name: "here"}, Now: c.now, MaxPeers: 4}
	s := New(opts)
	pad := strings.Repeat("x", 400)
	for p := range 3 {
		var ds []disk.Disk
		for i := range 1200 {
			n := fmt.Sprintf("sd%d", i)
			ds = append(ds, disk.Disk{Name: n, Device: "/dev/" + n, Label: fmt.Sprintf("L%d-%d-%s", p, i, pad),
				UUID: fmt.Sprintf("u-%d-%d", p, i), Mounts: []string{"/srv/" + n}})
		}
		if p == 1 {
			ds[7].Label = strings.Repeat("long ", packChunk/4)
		}
		s.ApplyPeer(disk.Node{ID: disk.NodeID(fmt.Sprintf("%032x", p+0x100)), Name: fmt.Sprint("peer", p)}, ds)
	}
	s2, db, aside, err := OpenStore(saveState(t, s), opts)
	if err != nil || aside != "" {
		t.Fatal(err, aside)
	}
	defer db.Close()
	chunks, long := 0, false
	for _, e := range s2.nodes {
		chunks += len(e.pack.b)
		for _, c := range e.pack.b {
			long = long || len(c) > packChunk
		}
	}
	if chunks < 3*8 || !long {
		t.Errorf("%d chunks, one longer than a chunk: %v", chunks, long)
	}
	for p := range 3 { // as a restart has them
		s.SetPeerOffline(disk.NodeID(fmt.Sprintf("%032x", p+0x100)))
	}
	if got, want := savedView(s2), savedView(s); got != want {
		t.Errorf("loaded store differs from the saved one")
	}
	checkDerived(t, s2, []string{"u-1-7", "L2-5-" + pad, "/dev/sd9"}, "after the load")
}
