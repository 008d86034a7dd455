package ctlclient

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// spliceResult passes a list reply's result to w, when w is a pipe, with
// splice(2): the kernel moves the socket's pages into the pipe, and the
// 40 MB of a large list never cross diskctl's memory, nor are they copied
// into the pipe. The frame is still checked byte for byte: each stretch
// is first peeked (MSG_PEEK: one copy, into a buffer that is reused) to
// find the newline that ends the reply, so exactly what copyResult would
// write is written, and what follows the newline stays in the socket for
// the next reply.
//
// done is false when nothing was consumed and ListJSONTo's reading path
// must answer: w is not a pipe, c.r holds bytes already, or the reply is
// not a successful one (an error reply is short: readResponse decodes it).
func (c *Client) spliceResult(w io.Writer) (done bool, err error) {
	out, ok := w.(*os.File)
	if !ok || c.r.Buffered() > 0 || len(c.src.pre) > 0 {
		return false, nil
	}
	sc, ok := c.conn.(syscall.Conn)
	if !ok {
		return false, nil
	}
	sraw, err := sc.SyscallConn()
	if err != nil {
		return false, nil
	}
	oraw, err := out.SyscallConn()
	if err != nil || !isPipe(oraw) {
		return false, nil
	}
	s := &splicer{c: c, out: out, sraw: sraw, oraw: oraw, buf: make([]byte, peekSize)}
	n, err := s.peek()
	if err != nil || n < len(okPrefix) || !bytes.Equal(s.buf[:len(okPrefix)], okPrefix) {
		// A short first stretch, or an error: c.r reads it as before
		// (nothing was consumed).
		return false, nil
	}
	if err := s.discard(len(okPrefix)); err != nil {
		return true, err
	}
	return true, s.run()
}

// peekSize bounds one peek: more than a Unix socket queues by default
// (the sender's SO_SNDBUF, 208 KiB).
const peekSize = 1 << 20

func isPipe(raw syscall.RawConn) bool {
	pipe := false
	raw.Control(func(fd uintptr) {
		var st unix.Stat_t
		pipe = unix.Fstat(int(fd), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFIFO
	})
	return pipe
}

type splicer struct {
	c          *Client
	out        *os.File
	sraw, oraw syscall.RawConn
	buf        []byte
	held       bool // a '}' taken from the socket and not yet written
}

// run passes on the result up to the frame's end.
func (s *splicer) run() error {
	for {
		n, err := s.peek()
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("list: reading reply: %w", io.EOF)
		}
		chunk := s.buf[:n]
		if i := bytes.IndexByte(chunk, '\n'); i >= 0 {
			closed := s.held && i == 0 || i > 0 && chunk[i-1] == '}'
			if !closed {
				// Consumed through the newline, as c.r would have.
				if err := s.discard(i + 1); err != nil {
					return err
				}
				return errMalformed
			}
			if i > 1 || s.held && i == 1 {
				if err := s.pass(i - 1); err != nil {
					return err
				}
			}
			return s.discard(min(i+1, 2))
		}
		end := n
		if chunk[n-1] == '}' {
			end-- // it may close the frame: taken, written once the next byte is known
		}
		if end > 0 || s.held {
			if err := s.pass(end); err != nil {
				return err
			}
		}
		if end < n {
			if err := s.discard(1); err != nil {
				return err
			}
			s.held = true
		}
	}
}

// peek waits for bytes on the socket and copies what is queued into s.buf
// without taking it.
func (s *splicer) peek() (int, error) {
	var n int
	var rerr error
	err := s.sraw.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), s.buf, unix.MSG_PEEK)
		return rerr != unix.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return 0, fmt.Errorf("list: reading reply: %w", s.opError(err))
	}
	return n, nil
}

// discard takes n peeked bytes from the socket.
func (s *splicer) discard(n int) error {
	var rerr error
	err := s.sraw.Read(func(fd uintptr) bool {
		for n > 0 && rerr == nil {
			var m int
			m, _, rerr = unix.Recvfrom(int(fd), s.buf[:n], 0)
			if rerr == nil && m == 0 {
				rerr = io.ErrUnexpectedEOF // cannot be: the bytes were peeked
			}
			n -= m
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("list: reading reply: %w", s.opError(err))
	}
	return nil
}

// pass moves n peeked bytes from the socket to the pipe, after the '}'
// held back, if any.
func (s *splicer) pass(n int) error {
	var werr, perr error
	cerr := s.sraw.Control(func(sfd uintptr) {
		perr = s.oraw.Write(func(ofd uintptr) bool {
			if s.held {
				if _, werr = unix.Write(int(ofd), []byte{'}'}); werr == unix.EAGAIN {
					return false
				}
				s.held = werr != nil
			}
			for n > 0 && werr == nil {
				var m int64
				m, werr = unix.Splice(int(sfd), nil, int(ofd), nil, n, unix.SPLICE_F_MOVE)
				if werr == unix.EAGAIN {
					return false // the pipe is full (it is non-blocking): wait
				}
				if werr == nil && m == 0 {
					werr = io.ErrUnexpectedEOF // cannot be: the bytes were peeked
				}
				n -= int(m)
			}
			return true
		})
	})
	if werr == nil {
		werr = cmp.Or(perr, cerr)
	}
	if werr != nil {
		// w failed (the reader went away): the rest of the reply is
		// still on its way, so the session ends, as copyResult's caller
		// ends it.
		s.c.conn.Close()
		if errors.Is(werr, unix.EPIPE) {
			// Written through os.File, a broken pipe on standard output
			// ends the process by SIGPIPE, as any other write of
			// diskctl's would (the byte goes nowhere: no one reads).
			if _, err := s.out.Write([]byte{'\n'}); err != nil {
				return err
			}
		}
		return &os.PathError{Op: "write", Path: s.out.Name(), Err: werr}
	}
	return nil
}

// opError words a socket error as net.Conn's Read does.
func (s *splicer) opError(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, unix.EAGAIN) {
		err = os.ErrDeadlineExceeded
	}
	return &net.OpError{Op: "read", Net: "unix", Source: s.c.conn.LocalAddr(), Addr: s.c.conn.RemoteAddr(), Err: err}
}
