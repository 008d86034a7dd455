package peer

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// openLinkWatch subscribes to the kernel's link and address changes, so a
// new interface (or a new address that makes one usable) is joined at once
// rather than at the next periodic rescan. The messages themselves are not
// parsed: any of them triggers a rescan. Non-blocking, so the returned
// file's Read is served by the runtime poller and Close interrupts it.
func openLinkWatch() (*os.File, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	sa := &unix.SockaddrNetlink{Family: unix.AF_NETLINK,
		Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	return os.NewFile(uintptr(fd), "netlink-route"), nil
}

// watchLinks signals changed (without blocking) on every batch of
// messages until f is closed.
func watchLinks(f *os.File, changed chan<- struct{}) {
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Read(buf); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			// ENOBUFS: we missed messages; a rescan covers them too. Pause
			// so that an error that repeats cannot spin.
			time.Sleep(100 * time.Millisecond)
		}
		select {
		case changed <- struct{}{}:
		default:
		}
	}
}
