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
