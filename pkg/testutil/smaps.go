package testutil

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// MappedRssKiB is how much of the file path a process has resident
// through its mappings of it, from its smaps ("/proc/self/smaps",
// "/proc/PID/smaps"); -1 when it has no mapping of path.
func MappedRssKiB(t testing.TB, smaps, path string) int {
	t.Helper()
	kib, err := ReadMappedRssKiB(smaps, path)
	if err != nil {
		t.Fatalf("mapped RSS of %s: %v", path, err)
	}
	return kib
}

// ReadMappedRssKiB is MappedRssKiB for a goroutine other than the test's.
func ReadMappedRssKiB(smaps, path string) (int, error) {
	f, err := os.Open(smaps)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	kib, in := -1, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		switch {
		case len(fs) >= 5 && strings.Contains(fs[0], "-") && !strings.HasSuffix(fs[0], ":"):
			in = fs[len(fs)-1] == path // a mapping's header line
		case in && len(fs) >= 2 && fs[0] == "Rss:":
			v, _ := strconv.Atoi(fs[1])
			kib = max(kib, 0) + v
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read %s: %w", smaps, err)
	}
	return kib, nil
}
