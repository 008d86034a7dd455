// Package sysfs owns reading block device facts from sysfs: size,
// read-only and removable flags, major:minor, and the kernel name behind a
// /dev path. It takes the sysfs root as an argument so tests point it at a
// fixture tree.
package sysfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// SectorSize is the unit of sysfs "size" files, whatever the device's
// logical block size.
const SectorSize = 512

// Info is what sysfs says about one block device.
type Info struct {
	Name      string // kernel name, e.g. "sda1", "loop3", "dm-0"
	MajMin    string // "8:1"
	Size      uint64 // bytes
	ReadOnly  bool
	Removable bool // for a partition, its disk's flag

	Partition bool   // the device is a partition of Parent
	Parent    string // kernel name of the disk holding a partition; "" for a disk
}

// Read reads class/block/NAME/{dev,size,ro,removable} under sysRoot
// (usually "/sys"). Partitions have no removable attribute; they take it
// from their disk. A name with '/' (DEVNAME "cciss/c0d0") is looked up as
// sysfs spells it ("cciss!c0d0"). A device that does not exist gives an
// error wrapping fs.ErrNotExist.
func Read(sysRoot, name string) (Info, error) {
	sysName := strings.ReplaceAll(name, "/", "!")
	if sysName == "" || sysName == "." || sysName == ".." || strings.ContainsRune(sysName, 0) {
		return Info{}, fmt.Errorf("sysfs: invalid device name %q", name)
	}
	dir := filepath.Join(sysRoot, "class", "block", sysName)
	info := Info{Name: sysName}
	var err error
	if info.MajMin, err = readMajMin(filepath.Join(dir, "dev")); err != nil {
		return Info{}, fmt.Errorf("sysfs %s: %w", name, err)
	}
	sectors, err := readUint(filepath.Join(dir, "size"))
	if err != nil {
		return Info{}, fmt.Errorf("sysfs %s: %w", name, err)
	}
	info.Size = sectors * SectorSize
	if info.ReadOnly, err = readBool(filepath.Join(dir, "ro")); err != nil {
		return Info{}, fmt.Errorf("sysfs %s: %w", name, err)
	}
	removableDir := dir
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		// class/block/sda1 links to .../block/sda/sda1: the disk is the
		// parent directory of the partition's real one.
		real, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return Info{}, fmt.Errorf("sysfs %s: %w", name, err)
		}
		removableDir = filepath.Dir(real)
		info.Partition = true
		info.Parent = filepath.Base(removableDir)
	}
	if info.Removable, err = readBool(filepath.Join(removableDir, "removable")); err != nil {
		return Info{}, fmt.Errorf("sysfs %s: %w", name, err)
	}
	return info, nil
}

// KernelName returns the kernel name of the block device at devPath, which
// may be a symlink: "/dev/mapper/x" -> "dm-0", "/dev/loop3" -> "loop3",
// "/dev/disk/by-label/DATA" -> "sda1". It asks sysfs which device owns the
// node's major:minor, so the answer is right even where the node's own
// name differs from the kernel's.
func KernelName(devPath string) (string, error) {
	return kernelName("/sys", devPath)
}

func kernelName(sysRoot, devPath string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(devPath, &st); err != nil {
		return "", fmt.Errorf("kernel name of %s: %w", devPath, &os.PathError{Op: "stat", Path: devPath, Err: err})
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", fmt.Errorf("kernel name of %s: not a block device", devPath)
	}
	majmin := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	target, err := os.Readlink(filepath.Join(sysRoot, "dev", "block", majmin))
	if err != nil {
		return "", fmt.Errorf("kernel name of %s (%s): %w", devPath, majmin, err)
	}
	return filepath.Base(target), nil
}

func readTrim(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func readMajMin(path string) (string, error) {
	s, err := readTrim(path)
	if err != nil {
		return "", err
	}
	maj, min, ok := strings.Cut(s, ":")
	if !ok || !isDigits(maj) || !isDigits(min) {
		return "", fmt.Errorf("%s: %q is not major:minor", path, s)
	}
	return s, nil
}

func readUint(path string) (uint64, error) {
	s, err := readTrim(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a number", path, s)
	}
	return n, nil
}

func readBool(path string) (bool, error) {
	s, err := readTrim(path)
	if err != nil {
		return false, err
	}
	switch s {
	case "0":
		return false, nil
	case "1":
		return true, nil
	}
	return false, fmt.Errorf("%s: %q is not 0 or 1", path, s)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
