package cli

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// widenPipe asks for a 1 MiB pipe when w is one: a list of 100,000 disks
// (40 MB) then crosses to the reader in 40 wake-ups rather than 640 of the
// default 64 KiB. Where the kernel says no (an unprivileged user past
// /proc/sys/fs/pipe-max-size), the pipe stays as it was.
func widenPipe(w io.Writer) {
	f, ok := w.(*os.File)
	if !ok {
		return
	}
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return
	}
	unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, 1<<20)
}
