package disk

// Spec is the most specific name Matches accepts for d: its UUID, else its
// partition UUID, else its device path. A request about one disk (mount,
// unmount) names it so, not by a label that several disks may share.
func (d *Disk) Spec() string {
	switch {
	case d.UUID != "":
		return d.UUID
	case d.PartUUID != "":
		return d.PartUUID
	}
	return d.Device
}
