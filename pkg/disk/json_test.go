package disk

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	ts := time.Date(2026, 11, 25, 14, 0, 0, 123456789, time.FixedZone("x", 3600))
	cases := []Disk{
		{},
		{Node: "n", Host: "h", Name: "loop0", Device: "/dev/loop0", Size: 1 << 40, Mounts: []string{}},
		{Label: "a \"quoted\" \\ label <&> \n\t\r\b\f\x01\x7f é \xc3\x28 \u2028\u2029 日本", UUID: "u",
			PartUUID: "p", PartLabel: "pl", Type: "ext4", Usage: "filesystem", MajMin: "7:0",
			ReadOnly: true, Removable: true, Present: true, Mounts: []string{"/a b", "/c"},
			ID: "uuid:u", NotUnique: true, Row: "uuid:u@n/loop0",
			FirstSeen: ts, LastSeen: ts.UTC()},
	}
	for _, d := range cases {
		want, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendJSON(nil, &d); !bytes.Equal(got, want) {
			t.Errorf("AppendJSON:\n got %s\nwant %s", got, want)
		}
	}
	want, _ := json.Marshal(cases)
	if got := AppendJSONArray(nil, cases); !bytes.Equal(got, want) {
		t.Errorf("array differs")
	}
	if got := AppendJSONArray(nil, nil); string(got) != "[]" {
		t.Errorf("empty array = %s", got)
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("label", "/mnt/x", "uuid", uint64(5), int64(0))
	f.Add("\xff\xfe<>&\"\\\u2028", "\x00", "", uint64(1<<63), int64(1e18))
	f.Fuzz(func(t *testing.T, label, mount, uuid string, size uint64, nsec int64) {
		d := Disk{Label: label, UUID: uuid, Size: size, Mounts: []string{mount}, LastSeen: time.Unix(0, nsec).UTC()}
		want, err := json.Marshal(d)
		if err != nil {
			t.Skip()
		}
		if got := AppendJSON(nil, &d); !bytes.Equal(got, want) {
			t.Errorf("got %s want %s", got, want)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	d := Disk{Node: "0123456789abcdef0123456789abcdef", Host: "host", Name: "sda1", Device: "/dev/sda1",
		UUID: "1111aaaa-0000-4000-8000-00000000000a", Label: "root", Type: "ext4", Size: 1 << 30,
		Mounts: []string{"/"}, Present: true, LastSeen: time.Now()}
	b.Run("AppendJSON", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = AppendJSON(buf[:0], &d)
		}
	})
	b.Run("baseline-encoding-json", func(b *testing.B) {
		for b.Loop() {
			json.Marshal(&d)
		}
	})
}

// parseCases are JSON texts ParseJSONArray must decode as encoding/json
// does: its own output, and forms only encoding/json reads.
var parseCases = []string{
	`[]`, `null`, ` [ ] `, `[{}]`,
	`[{"id":"x","size":0,"mountpoints":null,"present":true,"not_unique":true}]`,
	`[{"ID":"case-folded key"}]`,
	`[{"unknown":1,"id":"x"}]`,
	`[{"label":"\u00e9\ud83d\ude00\/\b\f\n\r\t\"\\"}]`,
	`[{"label":"lone \ud83d surrogate"}]`,
	"[{\"label\":\"bad \xff utf8\"}]",
	`[{"label":null}]`,
	`[{"size":1e3}]`, `[{"size":01}]`, `[{"size":-1}]`, `[{"size":18446744073709551616}]`,
	`[{"last_seen":"2026-11-25T14:00:00.5+01:00"}]`, `[{"last_seen":"not a time"}]`,
	`[{"last_seen":"2026-11-25T14:00:00\u002e5Z"}]`,
	`[{"mountpoints":["/a","/b c"]},{"mountpoints":[]}]`,
	`[{"id":"x"},]`, `[{"id":"x"}`, `[{"id":"x"}] x`, `{"id":"x"}`, `[{"id":"x" "name":"y"}]`,
	"[{\"label\":\"raw\tcontrol\"}]",
}

func TestParseJSONArrayMatchesEncodingJSON(t *testing.T) {
	ts := time.Date(2026, 11, 25, 14, 0, 0, 123456789, time.FixedZone("x", 3600))
	own := AppendJSONArray(nil, []Disk{{}, {Label: "a \"quoted\" \\ label <&> \n\t\r\b\f\x01\x7f é \u2028\u2029 日本",
		UUID: "u", PartUUID: "p", PartLabel: "pl", Type: "ext4", Usage: "filesystem", MajMin: "7:0", ReadOnly: true,
		Removable: true, Present: true, Mounts: []string{"/a b", "/c"}, ID: "uuid:u", NotUnique: true,
		FirstSeen: ts, LastSeen: ts.UTC(), Size: 1 << 63}})
	for _, c := range append(parseCases, string(own)) {
		checkParse(t, []byte(c))
	}
}

func checkParse(t *testing.T, b []byte) {
	t.Helper()
	b = bytes.Clone(b) // overwritten below
	var want []Disk
	werr := json.Unmarshal(b, &want)
	got, err := ParseJSONArray(b)
	if (err == nil) != (werr == nil) || err != nil && err.Error() != werr.Error() {
		t.Fatalf("%s: error %v, encoding/json says %v", b, err, werr)
	}
	if err != nil {
		return
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if !bytes.Equal(gj, wj) || (got == nil) != (want == nil) {
		t.Fatalf("%s:\n got %s\nwant %s", b, gj, wj)
	}
	// The shared parse reads the same, from a buffer of its own.
	shared, serr := ParseJSONArrayShared(bytes.Clone(b))
	if sj, _ := json.Marshal(shared); serr != nil || !bytes.Equal(sj, gj) || (shared == nil) != (got == nil) {
		t.Fatalf("%s: shared parse gives %s (%v), want %s", b, sj, serr, gj)
	}
	// ParseJSONArray's strings are a copy: b is the caller's still.
	for i := range b {
		b[i] = 'X'
	}
	if gj2, _ := json.Marshal(got); !bytes.Equal(gj2, gj) {
		t.Fatalf("ParseJSONArray's result changed with its input: %s, was %s", gj2, gj)
	}
	for i := range got {
		if !got[i].LastSeen.Equal(want[i].LastSeen) || got[i].LastSeen.Location().String() != want[i].LastSeen.Location().String() ||
			(got[i].Mounts == nil) != (want[i].Mounts == nil) {
			t.Fatalf("%s: disk %d differs: %+v, want %+v", b, i, got[i], want[i])
		}
	}
}

func FuzzParseJSONArray(f *testing.F) {
	for _, c := range parseCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkParse(t, b) })
}

func BenchmarkParse100k(b *testing.B) {
	ds := make([]Disk, 100_000)
	for i := range ds {
		ds[i] = Disk{ID: "uuid:x", Node: "0123456789abcdef0123456789abcdef", Host: "peer01", Name: "sda1", Device: "/dev/sda1",
			UUID: "1111aaaa-0000-4000-8000-00000000000a", Label: "LABEL-1", Type: "ext4", Size: 1 << 30,
			Mounts: []string{"/srv/1"}, Present: true, FirstSeen: time.Now(), LastSeen: time.Now()}
	}
	raw := AppendJSONArray(nil, ds)
	b.Run("ParseJSONArray", func(b *testing.B) {
		for b.Loop() {
			if _, err := ParseJSONArray(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline-encoding-json", func(b *testing.B) {
		for b.Loop() {
			var out []Disk
			if err := json.Unmarshal(raw, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// record is the state file's row record as pkg/store writes it.
type record struct {
	Disk  Disk       `json:"disk"`
	Since time.Time  `json:"since,omitzero"`
	Past  []Sighting `json:"past,omitempty"`
}

// recordCases are row records ParseRecordJSON must decode as
// encoding/json does, or leave to it.
var recordCases = []string{
	`{}`, ` { } `, `{"disk":{}}`, `{"past":null}`, `{"past":[]}`, `{"disk":null}`,
	`{"disk":{"name":"sda","uuid":"u","size":5,"mountpoints":["/a"],"first_seen":"2026-11-25T14:00:00Z"},"since":"2026-11-26T14:00:00.5+01:00","past":[{"node_id":"n","host":"h","name":"sdb","device":"/dev/sdb","first_seen":"2026-11-20T00:00:00Z","last_seen":"2026-11-21T00:00:00Z"}]}`,
	`{"disk":{"name":"a"},"disk":{"label":"b"}}`, `{"past":[{"name":"a"}],"past":[{"host":"b"},{}]}`,
	`{"Disk":{"name":"case-folded"}}`, `{"disk":{"name":"x"},"extra":1}`, `{"past":[{"NAME":"x"}]}`,
	`{"past":[{"name":"\u00e9\ud83d\ude00\/\b\f\n\r\t\"\\"}]}`, `{"past":[{"name":"lone \ud83d"}]}`,
	"{\"past\":[{\"host\":\"bad \xff utf8\"}]}", `{"past":[{"host":null}]}`, `{"since":null}`,
	`{"since":"not a time"}`, `{"since":5}`, `{"disk":{"size":"5"}}`, `{"disk":{"size":1.5}}`,
	`{"disk":[]}`, `{"past":{}}`, `{"past":[{}],}`, `{"disk":{}`, `{"disk":{}} x`, `[]`, `null`, ``,
	`{"disk":{} "since":"2026-11-25T14:00:00Z"}`, `{"past":[{"name":"a"} {"name":"b"}]}`,
}

func TestParseRecordJSONMatchesEncodingJSON(t *testing.T) {
	for _, c := range recordCases {
		checkRecord(t, []byte(c))
	}
	// Generated records, as the store writes them: each must be read by
	// the fast path, not handed to encoding/json.
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		rec := randomRecord(r)
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, ok := ParseRecordJSON(b); !ok {
			t.Fatalf("%s: left to encoding/json", b)
		}
		checkRecord(t, b)
	}
}

// randomRecord makes a row record whose strings draw on what JSON must
// escape, multi-byte runes and invalid UTF-8, and whose times have zones.
func randomRecord(r *rand.Rand) record {
	pieces := []string{"a", "sda1", "/dev/", "é", "日本", "\U0001F600", "\"", "\\", "<&>", "\n", "\t", "\x01", "\x7f",
		"\u2028", "\xff", "\xc3\x28", " ", "LABEL-1"}
	str := func() string {
		var s strings.Builder
		for range r.IntN(5) {
			s.WriteString(pieces[r.IntN(len(pieces))])
		}
		return s.String()
	}
	tm := func() time.Time {
		if r.IntN(8) == 0 {
			return time.Time{}
		}
		t := time.Unix(r.Int64N(4e9), r.Int64N(1e9)*int64(r.IntN(2)))
		if r.IntN(3) == 0 {
			return t.In(time.FixedZone("", (r.IntN(48)-24)*1800))
		}
		return t.UTC()
	}
	d := Disk{ID: str(), Node: NodeID(str()), Host: str(), Name: str(), Device: str(), MajMin: str(), UUID: str(),
		PartUUID: str(), Label: str(), PartLabel: str(), Type: str(), Usage: str(), Size: r.Uint64() >> r.IntN(64),
		ReadOnly: r.IntN(2) == 0, Removable: r.IntN(2) == 0, Present: r.IntN(2) == 0, NotUnique: r.IntN(4) == 0,
		FirstSeen: tm(), LastSeen: tm()}
	if n := r.IntN(4); n > 0 || r.IntN(2) == 0 {
		d.Mounts = make([]string, n)
		for i := range d.Mounts {
			d.Mounts[i] = str()
		}
	}
	rec := record{Disk: d}
	if r.IntN(3) == 0 {
		rec.Since = tm()
	}
	for range r.IntN(4) {
		rec.Past = append(rec.Past, Sighting{Node: NodeID(str()), Host: str(), Name: str(), Device: str(),
			FirstSeen: tm(), LastSeen: tm()})
	}
	return rec
}

// checkRecord fails unless ParseRecordJSON, when it reads b, gives what
// encoding/json gives, and encoding/json accepts b.
func checkRecord(t *testing.T, b []byte) {
	t.Helper()
	d, since, past, ok := ParseRecordJSON(b)
	if !ok {
		return
	}
	var want record
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("%s: read, but encoding/json says %v", b, err)
	}
	if got := (record{Disk: d, Since: since, Past: past}); !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %#v\nwant %#v", b, got, want)
	}
}

func FuzzParseRecordJSON(f *testing.F) {
	for _, c := range recordCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkRecord(t, b) })
}
