package main

import (
	"reflect"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/scanner"
)

// TestScanStatus: the scanner's status reaches the client API whole
// (every field of api.ScanStatus is set from it), durations in seconds.
func TestScanStatus(t *testing.T) {
	t0 := time.Date(2026, 11, 20, 18, 2, 11, 0, time.UTC)
	in := scanner.Status{
		LastScan: t0, LastDuration: 1500 * time.Millisecond, LastError: "full scan: blkid: exit status 4",
		LastErrorTime: t0.Add(time.Second), FullScans: 1, DeviceProbes: 2, Uevents: 3, MountUpdates: 4,
		Blkid: "/sbin/blkid", BlkidTimeout: 15 * time.Second, UeventsActive: true,
	}
	want := api.ScanStatus{
		LastScan: t0, LastDuration: 1.5, LastError: "full scan: blkid: exit status 4",
		LastErrorTime: t0.Add(time.Second), FullScans: 1, DeviceProbes: 2, Uevents: 3, MountUpdates: 4,
		Blkid: "/sbin/blkid", BlkidTimeout: 15, UeventsActive: true,
	}
	got := scanStatus(in)
	if got != want {
		t.Errorf("scanStatus:\n got %+v\nwant %+v", got, want)
	}
	// A field added to either side must be translated (and listed above).
	for _, v := range []reflect.Value{reflect.ValueOf(in), reflect.ValueOf(got)} {
		for i := range v.NumField() {
			if v.Field(i).IsZero() {
				t.Errorf("%s.%s is not set by this test", v.Type(), v.Type().Field(i).Name)
			}
		}
	}
}
