package tftp

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"testing"
	"time"
)

// FuzzRequest sends arbitrary bytes as the first packet of a transfer to
// a running server over loopback: the steering program picks the socket,
// then request parsing, mode and option negotiation are the library's
// (blksize, tsize) or, for a request naming windowsize, metal's windowed
// sender's (blksize, tsize, timeout, windowsize); the name resolution is
// metal's either way. Whatever arrives, the server answers only with
// DATA, ERROR or OACK, never sends the file outside its root, and keeps
// serving (a panic in any of its goroutines ends the fuzzing process).
// Seeds: testdata/fuzz/FuzzRequest.
func FuzzRequest(f *testing.F) {
	ts := startServer(f, func(c *Config) { c.Timeout = 50 * time.Millisecond; c.Retries = 1 })
	secret, err := os.ReadFile(ts.secret)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, packet []byte) {
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.WriteTo(packet, ts.addr); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65536)
		// Follow the transfer a few packets: an OACK is acknowledged to get
		// the first DATA, which is then checked and the transfer abandoned.
		for i := 0; i < 3; i++ {
			_ = conn.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return // no answer: a packet the server ignores
			}
			if n < 4 {
				t.Fatalf("reply of %d bytes to %q", n, packet)
			}
			switch op := binary.BigEndian.Uint16(buf); op {
			case opERROR:
				return
			case opOACK:
				_, _ = conn.WriteTo([]byte{0, opACK, 0, 0}, from)
			case opDATA:
				// A small blksize sends the file in pieces: the first is
				// a prefix of it.
				if payload := buf[4:n]; len(payload) > 0 && (bytes.HasPrefix(secret, payload) || bytes.Contains(payload, secret)) {
					t.Fatalf("request %q reached the file outside the root", packet)
				}
				// Abandon the transfer, as a client giving up does.
				_, _ = conn.WriteTo([]byte{0, opERROR, 0, 0, 0}, from)
				return
			default:
				t.Fatalf("reply opcode %d to %q", op, packet)
			}
		}
	})
}
