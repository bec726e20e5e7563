package http1

import (
	"io"
	"net"
)

// recordHeaderLen is the length of a TLS record's header: type, version,
// and the length of what follows (RFC 8446, section 5.1).
const recordHeaderLen = 5

// recordReader sits between a TLS client and its socket. It reads the
// socket into a buffer of its own and hands the TLS layer one record at a
// time, never a byte past the record it is in: tls.Conn keeps whatever it
// read ahead to itself, where the pool's checks could not see bytes a
// peer sent past its answer.
type recordReader struct {
	r        io.Reader
	buf      []byte
	off, end int
	hdr      [recordHeaderLen]byte
	hdrN     int // header bytes of the current record handed over
	left     int // bytes of the current record's body not handed over yet
}

func newRecordReader(r io.Reader) *recordReader {
	return &recordReader{r: r, buf: make([]byte, 4<<10)}
}

func (rr *recordReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if rr.off == rr.end {
		n, err := rr.r.Read(rr.buf)
		if n <= 0 {
			return 0, err
		}
		// An error with the bytes comes back on the next read.
		rr.off, rr.end = 0, n
	}
	avail := rr.buf[rr.off:rr.end]
	var n int
	if rr.hdrN < recordHeaderLen {
		n = copy(p, avail[:min(len(avail), recordHeaderLen-rr.hdrN)])
		copy(rr.hdr[rr.hdrN:], avail[:n])
		if rr.hdrN += n; rr.hdrN == recordHeaderLen {
			if rr.left = int(rr.hdr[3])<<8 | int(rr.hdr[4]); rr.left == 0 {
				rr.hdrN = 0
			}
		}
	} else {
		n = copy(p, avail[:min(len(avail), rr.left)])
		if rr.left -= n; rr.left == 0 {
			rr.hdrN = 0
		}
	}
	rr.off += n
	return n, nil
}

// holding reports whether the TLS layer is in the middle of a record, or
// bytes of the socket are waiting here. A nil recordReader holds nothing.
func (rr *recordReader) holding() bool {
	return rr != nil && (rr.off < rr.end || rr.hdrN > 0)
}

// recordConn is the connection a TLS client reads through a recordReader.
type recordConn struct {
	net.Conn
	r *recordReader
}

func (c recordConn) Read(p []byte) (int, error) { return c.r.Read(p) }
