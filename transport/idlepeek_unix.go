//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package transport

import (
	"errors"
	"syscall"
)

// peek looks at the socket without taking a byte and without waiting
// (MSG_PEEK|MSG_DONTWAIT); syscall.RawConn.Read calls it on the
// descriptor.
func (c *directConn) peek(fd uintptr) bool {
	c.peekN, _, c.peekErr = syscall.Recvfrom(int(fd), c.one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return true
}

// peekedNothing reports whether a peek found the socket empty and open:
// it would have blocked. A byte, the end of the stream (0 bytes, no
// error) and an error all mean the connection cannot carry a request.
func peekedNothing(n int, err error) bool {
	return n <= 0 && (errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK))
}
