package disk

import "strings"

// The usage classes libblkid reports in USAGE (its BLKID_USAGE_* flags).
const (
	UsageFilesystem = "filesystem"
	UsageRAID       = "raid"
	UsageCrypto     = "crypto"
	UsageOther      = "other"
)

// usageByType is libblkid's own classification of every signature it
// knows that is not a filesystem (the .usage of each prober in
// util-linux's libblkid/src/superblocks/, as blkid_superblocks_get_name
// returns it; libblkid 2.38.1 plus cs_fvault2 from 2.39). Filesystems are
// not listed: every type not here is one, as a type libblkid learns later
// most likely is. The blkid package's tests hold this table against the
// installed libblkid (`blkid -k` and low-level USAGE on loop devices).
var usageByType = map[string]string{
	// RAID and volume-manager members; the *_raid_member family is matched
	// by suffix in UsageForType, so a new firmware RAID needs no line.
	"LVM1_member":        UsageRAID,
	"LVM2_member":        UsageRAID,
	"drbd":               UsageRAID,
	"VMFS_volume_member": UsageRAID,
	"ubi":                UsageRAID,
	"stratis":            UsageRAID,
	// Not libblkid's: udev's multipath rules set ID_FS_TYPE=mpath_member.
	"mpath_member": UsageRAID,

	"crypto_LUKS":    UsageCrypto,
	"BitLocker":      UsageCrypto,
	"cs_fvault2":     UsageCrypto,
	"DM_integrity":   UsageCrypto,
	"DM_verity_hash": UsageCrypto,

	"swap":                      UsageOther,
	"swsuspend":                 UsageOther,
	"bcache":                    UsageOther,
	"ceph_bluestore":            UsageOther,
	"vdo":                       UsageOther,
	"DM_snapshot_cow":           UsageOther,
	"drbdmanage_control_volume": UsageOther,
	"xfs_external_log":          UsageOther,
	"jbd":                       UsageOther, // an ext3/4 external journal
}

// UsageForType returns the USAGE libblkid's low-level probe reports for a
// TYPE: "raid", "crypto", "other", or "filesystem" for everything else.
// The cached scan (`blkid -c /dev/null`) prints no USAGE and peers may not
// carry it, so this is the one place that derives it. An empty type (a
// bare partition) has no usage.
func UsageForType(typ string) string {
	if typ == "" {
		return ""
	}
	if u, ok := usageByType[typ]; ok {
		return u
	}
	if strings.HasSuffix(typ, "_raid_member") {
		// linux_raid_member, isw_raid_member, ddf_raid_member, ...
		return UsageRAID
	}
	return UsageFilesystem
}
