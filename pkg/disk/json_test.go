package disk

import (
	"bytes"
	"encoding/json"
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
