//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package http1

import (
	"errors"
	"syscall"
	"unsafe"
)

// peek looks at the socket without taking a byte and without waiting
// (MSG_PEEK|MSG_DONTWAIT); syscall.RawConn.Control calls it on the
// descriptor. It calls recvfrom itself, without an address:
// syscall.Recvfrom allocates one on every call.
func (c *directConn) peek(fd uintptr) {
	n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&c.one[0])), uintptr(len(c.one)),
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	c.peekN, c.peekErr = int(n), nil
	if errno != 0 {
		c.peekN, c.peekErr = -1, errno
	}
}

// peekedNothing reports whether a peek found the socket empty and open:
// it would have blocked. A byte, the end of the stream (0 bytes, no
// error) and an error all mean the connection cannot carry a request.
func peekedNothing(n int, err error) bool {
	return n <= 0 && (errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK))
}
