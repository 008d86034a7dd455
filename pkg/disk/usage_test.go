package disk

import (
	"os/exec"
	"strings"
	"testing"
)

// libblkidUsage is the USAGE of every TYPE libblkid knows: the 77 of
// libblkid 2.38.1 (Debian 12) in its probing order, as its own
// blkid_superblocks_get_name returns them, then the types later releases
// added. A TYPE missing here fails TestUsageTableCoversBlkid, so a new
// libblkid type gets a decision.
var libblkidUsage = map[string]string{
	"linux_raid_member":             "raid",
	"ddf_raid_member":               "raid",
	"isw_raid_member":               "raid",
	"lsi_mega_raid_member":          "raid",
	"via_raid_member":               "raid",
	"silicon_medley_raid_member":    "raid",
	"nvidia_raid_member":            "raid",
	"promise_fasttrack_raid_member": "raid",
	"hpt45x_raid_member":            "raid",
	"hpt37x_raid_member":            "raid",
	"adaptec_raid_member":           "raid",
	"jmicron_raid_member":           "raid",
	"bcache":                        "other",
	"ceph_bluestore":                "other",
	"drbd":                          "raid",
	"drbdmanage_control_volume":     "other",
	"drbdproxy_datalog":             "filesystem",
	"LVM2_member":                   "raid",
	"LVM1_member":                   "raid",
	"DM_snapshot_cow":               "other",
	"DM_verity_hash":                "crypto",
	"DM_integrity":                  "crypto",
	"crypto_LUKS":                   "crypto",
	"VMFS_volume_member":            "raid",
	"ubi":                           "raid",
	"vdo":                           "other",
	"stratis":                       "raid",
	"BitLocker":                     "crypto",
	"vfat":                          "filesystem",
	"swsuspend":                     "other",
	"swap":                          "other",
	"xfs":                           "filesystem",
	"xfs_external_log":              "other",
	"exfs":                          "filesystem",
	"ext4dev":                       "filesystem",
	"ext4":                          "filesystem",
	"ext3":                          "filesystem",
	"ext2":                          "filesystem",
	"jbd":                           "other",
	"reiserfs":                      "filesystem",
	"reiser4":                       "filesystem",
	"jfs":                           "filesystem",
	"udf":                           "filesystem",
	"iso9660":                       "filesystem",
	"zfs_member":                    "filesystem",
	"hfsplus":                       "filesystem",
	"hfs":                           "filesystem",
	"ufs":                           "filesystem",
	"hpfs":                          "filesystem",
	"sysv":                          "filesystem",
	"xenix":                         "filesystem",
	"ntfs":                          "filesystem",
	"ReFS":                          "filesystem",
	"cramfs":                        "filesystem",
	"romfs":                         "filesystem",
	"minix":                         "filesystem",
	"gfs":                           "filesystem",
	"gfs2":                          "filesystem",
	"ocfs":                          "filesystem",
	"ocfs2":                         "filesystem",
	"oracleasm":                     "filesystem",
	"vxfs":                          "filesystem",
	"squashfs":                      "filesystem",
	"squashfs3":                     "filesystem",
	"nss":                           "filesystem",
	"btrfs":                         "filesystem",
	"ubifs":                         "filesystem",
	"bfs":                           "filesystem",
	"VMFS":                          "filesystem",
	"befs":                          "filesystem",
	"nilfs2":                        "filesystem",
	"exfat":                         "filesystem",
	"f2fs":                          "filesystem",
	"mpool":                         "filesystem",
	"apfs":                          "filesystem",
	"zonefs":                        "filesystem",
	"erofs":                         "filesystem",
	// Added after 2.38.
	"cs_fvault2":   "crypto",
	"bcachefs":     "filesystem",
	"scoutfs_meta": "filesystem",
	"scoutfs_data": "filesystem",
}

func TestUsageForType(t *testing.T) {
	cases := map[string]string{
		"": "", // a bare partition
		// Not libblkid's: udev's multipath rules set this type.
		"mpath_member": "raid",
		// A firmware RAID a later libblkid may add: the suffix decides.
		"acme_raid_member": "raid",
		// An unknown type is most likely a new filesystem.
		"somefs": "filesystem",
	}
	for typ, want := range libblkidUsage {
		cases[typ] = want
	}
	for typ, want := range cases {
		if got := UsageForType(typ); got != want {
			t.Errorf("UsageForType(%q) = %q, want %q", typ, got, want)
		}
	}
}

// TestUsageTableCoversBlkid holds the table above to the installed
// libblkid: every TYPE it can report must have its usage decided here.
func TestUsageTableCoversBlkid(t *testing.T) {
	if _, err := exec.LookPath("blkid"); err != nil {
		t.Skip("blkid (util-linux) is not installed")
	}
	out, err := exec.Command("blkid", "-k").Output()
	if err != nil {
		t.Fatalf("blkid -k: %v", err)
	}
	types := strings.Fields(string(out))
	if len(types) < 50 {
		t.Fatalf("blkid -k listed %d types, expected the full list: %q", len(types), out)
	}
	for _, typ := range types {
		if _, ok := libblkidUsage[typ]; !ok {
			t.Errorf("libblkid knows TYPE %q: add its USAGE (from blkid -p on an image, or its prober's .usage) to libblkidUsage, and to usageByType unless it is a filesystem", typ)
		}
	}
}
