package control

import (
	"context"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// listSendBuffer is the socket send buffer a session asks for before its
// first list reply. With the default (net.core.wmem_default, 208 KiB) a
// list of 100,000 disks (40 MB) crosses in steps of ~100 KiB, daemon and
// client waking each other 400 times; with this the daemon writes ahead
// and the client takes megabytes per wake-up (`diskctl list --json` of
// 100,000 disks, streamed: 55 -> 42 ms p50 when it came). The kernel doubles it and caps it at
// net.core.wmem_max; a refusal changes nothing.
const listSendBuffer = 4 << 20

// growSendBuffer raises the send buffer for a list reply, once a session,
// remembering the default: drain holds the session's turn until no more
// than that is left queued.
func (ss *session) growSendBuffer() {
	if ss.sendBuf != 0 {
		return
	}
	raw := rawConn(ss.c)
	if raw == nil {
		return
	}
	raw.Control(func(fd uintptr) {
		def, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
		if err == nil && def > 0 && unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, listSendBuffer) == nil {
			ss.sendBuf = def
		}
	})
}

func rawConn(c any) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// drain waits, after a reply of a session whose send buffer was raised,
// until the client has taken all but what the default buffer holds. So a
// uid's reply turns (repliesPerUser) still bound the kernel memory its
// sessions keep queued, and a client that stops reading a list that fits
// in the larger buffer is still a slow reader: it is disconnected at the
// reply's write deadline, not left holding megabytes until it idles out.
func (ss *session) drain(ctx context.Context) bool {
	if ss.sendBuf == 0 {
		return true
	}
	raw := rawConn(ss.c)
	wait := 50 * time.Microsecond
	for {
		queued := 0
		if raw.Control(func(fd uintptr) { queued, _ = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }) != nil {
			return false
		}
		if queued <= ss.sendBuf {
			return true
		}
		if !time.Now().Before(ss.replyDeadline) {
			ss.logLimited("slow reader", "closing session: the client did not read its reply", "write_timeout", ss.s.cfg.WriteTimeout)
			return false
		}
		// diskctl takes the rest of a reply within milliseconds; a
		// client that does not is polled ever more rarely.
		t := time.NewTimer(min(wait, time.Until(ss.replyDeadline)))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}
