// Command sessionhog plays a hostile local client of diskd's socket, for
// the tests and benchmarks of issue 10 (test/local_users_test.go). The
// tests run it as another user (nobody, a temporary admin) with
// syscall.Credential, so the daemon sees that user's uid on SO_PEERCRED.
//
//	sessionhog SOCKET hold N       open N sessions that say nothing
//	sessionhog SOCKET stuck N      open N sessions that send "list" and never read
//	sessionhog SOCKET flood CMD D  send CMD as fast as the socket takes it for D
//
// hold and stuck print "accepted=A refused=R" and the first refusal line,
// then answer each line read on stdin with "closed=C open=O" (sessions the
// daemon has closed, seen as POLLRDHUP without reading), until stdin ends.
// flood prints "sent=S replies=R" and the first reply line.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: sessionhog SOCKET hold|stuck N | SOCKET flood CMD DURATION")
		os.Exit(2)
	}
	sock, mode := os.Args[1], os.Args[2]
	switch mode {
	case "hold", "stuck":
		n, err := strconv.Atoi(os.Args[3])
		if err != nil {
			fail(err)
		}
		hold(sock, n, mode == "stuck")
	case "flood":
		if len(os.Args) != 5 {
			fail(fmt.Errorf("flood wants CMD DURATION"))
		}
		d, err := time.ParseDuration(os.Args[4])
		if err != nil {
			fail(err)
		}
		flood(sock, os.Args[3], d)
	default:
		fail(fmt.Errorf("unknown mode %q", mode))
	}
}

func hold(sock string, n int, stuck bool) {
	var conns []*net.UnixConn
	refused, first := 0, ""
	for range n {
		c, err := net.Dial("unix", sock)
		if err != nil {
			refused++
			if first == "" {
				first = "dial: " + err.Error()
			}
			continue
		}
		// The greeting (or the refusal) is one line; read it byte by byte
		// so nothing after it is taken from the socket.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := readLine(c)
		c.SetReadDeadline(time.Time{})
		if err != nil || !strings.HasPrefix(line, "diskd ") {
			refused++
			if first == "" {
				first = fmt.Sprintf("%q %v", line, err)
			}
			c.Close()
			continue
		}
		if stuck {
			if _, err := c.Write([]byte("list\n")); err != nil {
				fail(err)
			}
		}
		conns = append(conns, c.(*net.UnixConn))
	}
	fmt.Printf("accepted=%d refused=%d first-refusal=%s\n", len(conns), refused, first)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		closed := 0
		for _, c := range conns {
			if peerClosed(c) {
				closed++
			}
		}
		fmt.Printf("closed=%d open=%d\n", closed, len(conns)-closed)
	}
}

func readLine(c net.Conn) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < 4096 {
		if _, err := c.Read(one); err != nil {
			return string(b), err
		}
		if one[0] == '\n' {
			return string(b), nil
		}
		b = append(b, one[0])
	}
	return string(b), nil
}

// peerClosed reports whether the daemon has closed its end, whatever
// unread data is still queued.
func peerClosed(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return true
	}
	var ev int16
	raw.Control(func(fd uintptr) {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(p, 0); err == nil && n == 1 {
			ev = p[0].Revents
		}
	})
	return ev&(unix.POLLRDHUP|unix.POLLHUP) != 0
}

func flood(sock, cmd string, d time.Duration) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		fail(err)
	}
	defer c.Close()
	replies := make(chan string, 1)
	count := make(chan int, 1)
	go func() {
		r := bufio.NewReader(c)
		r.ReadString('\n') // greeting
		n, first := 0, ""
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				break
			}
			if line = strings.TrimSpace(line); line == "" {
				continue
			}
			if first == "" {
				first = line
				replies <- first
			}
			n++
		}
		count <- n
	}()
	line := []byte(cmd + "\n")
	sent := 0
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		c.SetWriteDeadline(end)
		if _, err := c.Write(line); err != nil {
			break
		}
		sent++
	}
	c.(*net.UnixConn).CloseWrite()
	first := ""
	select {
	case first = <-replies:
	case <-time.After(5 * time.Second):
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n := 0
	select {
	case n = <-count:
	case <-time.After(10 * time.Second):
	}
	fmt.Printf("sent=%d replies=%d first-reply=%s\n", sent, n, first)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "sessionhog:", err)
	os.Exit(1)
}
