//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package http1

import "errors"

// errNoPeek: this system offers no look at a socket that cannot wait, so
// no connection is ever proven clean, and none is reused.
var errNoPeek = errors.New("no non-blocking peek on this system")

func (c *directConn) peek(uintptr) {
	c.peekN, c.peekErr = 0, errNoPeek
}

func peekedNothing(int, error) bool { return false }
