package testutil

import (
	"fmt"

	"github.com/diskd/diskd/pkg/disk"
)

// PeerReporter is what FillPeers feeds; *store.Store is one.
type PeerReporter interface {
	ApplyPeer(n disk.Node, disks []disk.Disk)
}

// FillPeers reports n made-up disks from peers of 4000 disks each
// ("peer00", "peer01", ...), for benchmarks of a large table.
func FillPeers(st PeerReporter, n int) {
	for p := 0; p*4000 < n; p++ {
		var ds []disk.Disk
		for k := p * 4000; k < min(n, (p+1)*4000); k++ {
			ds = append(ds, disk.Disk{Name: fmt.Sprintf("sd%d", k), Device: fmt.Sprintf("/dev/sd%d", k),
				Label: fmt.Sprintf("LABEL-%d", k), UUID: fmt.Sprintf("%08x-0000-4000-8000-000000000000", k),
				Type: "ext4", Size: 1 << 30, Mounts: []string{fmt.Sprintf("/srv/%d", k)}})
		}
		st.ApplyPeer(disk.Node{ID: disk.NodeID(fmt.Sprintf("%032x", p+0x100)), Name: fmt.Sprintf("peer%02d", p)}, ds)
	}
}
