package legacy

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/testutil"
)

func TestNewRefuses(t *testing.T) {
	st := store.New(store.Options{Local: disk.Node{ID: localID}})
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Group: "ff02::1"}, "want an IPv4 multicast address"},
		{Config{Group: "10.0.0.1"}, "want an IPv4 multicast address"},
		{Config{Group: "nonsense"}, "want an IPv4 multicast address"},
		{Config{Port: 70000}, "out of range"},
		{Config{Port: -1}, "out of range"},
		{Config{PeerInterval: time.Millisecond}, "want 1s to 24h"},
		{Config{PeerInterval: 48 * time.Hour}, "want 1s to 24h"},
	} {
		if _, err := New(c.cfg, st, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want %q", c.cfg, err, c.want)
		}
	}
}

// TestServiceOnAHost runs the bridge in-process on a namespace host, with
// a stranger on a second host: a datagram makes a legacy peer named by
// reverse DNS; our disks go out at start, on the first change at once,
// later changes no sooner than the change gap, and on Announce.
func TestServiceOnAHost(t *testing.T) {
	hosts := testutil.Hosts(t, 2)
	st := store.New(store.Options{Local: disk.Node{ID: localID, Name: "here"}})
	st.SetLocal([]disk.Disk{{Name: "sda1", Device: "/dev/sda1", UUID: "1111-AAAA", Label: "FIRST"}})
	s, err := New(Config{
		ChangeGap: time.Hour, // so the third change waits for Announce
		Enter:     func(fn func() error) error { return hosts[0].Do(fn) },
		LookupAddr: func(_ context.Context, a string) ([]string, error) {
			return []string{"oldbox.example."}, nil
		},
	}, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	tap := testutil.NewTap(t, hosts[1], netip.AddrPortFrom(netip.MustParseAddr(DefaultGroup), DefaultPort))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	ours := func() [][]byte {
		var out [][]byte
		for _, b := range tap.Datagrams() {
			if !bytes.Contains(b, []byte("FROM_STRANGER")) {
				out = append(out, b)
			}
		}
		return out
	}
	want := func(es ...Entry) []byte { b, _ := Encode(es); return b }
	first := Entry{"1111-AAAA", "FIRST", "/dev/sda1"}
	testutil.Eventually(t, 5*time.Second, "the start announce", func() bool { return len(ours()) == 1 })
	if got := ours()[0]; !bytes.Equal(got, want(first)) {
		t.Errorf("start announce %q", got)
	}

	tap.Send(netip.Addr{}, []byte("diskd:---\n- - 2222-BBBB\n  - FROM_STRANGER\n  - /dev/sdz1\n"))
	testutil.Eventually(t, 5*time.Second, "the stranger named by reverse DNS", func() bool {
		w := st.Where("FROM_STRANGER")
		return len(w) == 1 && w[0].Host == "oldbox.example" && w[0].Present
	})

	second := Entry{"3333-CCCC", "SECOND", "/dev/sdb1"}
	st.SetLocal([]disk.Disk{{Name: "sda1", Device: "/dev/sda1", UUID: "1111-AAAA", Label: "FIRST"},
		{Name: "sdb1", Device: "/dev/sdb1", UUID: "3333-CCCC", Label: "SECOND"}})
	testutil.Eventually(t, 5*time.Second, "the first change at once", func() bool { return len(ours()) == 2 })
	st.SetLocal([]disk.Disk{{Name: "sdb1", Device: "/dev/sdb1", UUID: "3333-CCCC", Label: "SECOND"}})
	s.Announce()
	testutil.Eventually(t, 5*time.Second, "the announce asked for", func() bool { return len(ours()) == 3 })
	got := ours()
	if !bytes.Equal(got[1], want(first, second)) || !bytes.Equal(got[2], want(second)) {
		t.Errorf("announces %q", got)
	}
	c := s.Status().Counters
	if c["sent_datagrams"] != 3 || c["lists_applied"] < 1 || c["drop_own"] != 3 {
		t.Errorf("counters %v", c)
	}
}
