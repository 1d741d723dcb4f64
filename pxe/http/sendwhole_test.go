package http

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSendWhole sends a header and a file over loopback TCP through small
// buffers on both ends, so that sendWhole waits for the poller again and
// again across its sendfile chunks; to a reader that goes away part way;
// and from a file shorter than the size announced.
func TestSendWhole(t *testing.T) {
	hdr := []byte("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
	for name, tc := range map[string]struct {
		fileSize, size int64
		// readUpTo: the reader closes after this many bytes (0: reads all);
		// stall: it reads nothing until sendWhole has returned.
		readUpTo int
		stall    bool
		wantSent int64
		wantErr  bool
		wantEOF  bool
	}{
		"several chunks through small buffers": {fileSize: 3*sendChunk + 1234, size: 3*sendChunk + 1234, wantSent: 3*sendChunk + 1234},
		"less than the file":                   {fileSize: 100_000, size: 70_000, wantSent: 70_000},
		"empty":                                {fileSize: 0, size: 0, wantSent: 0},
		"file shorter than announced":          {fileSize: 5000, size: 9000, wantSent: 5000, wantErr: true, wantEOF: true},
		"reader goes away":                     {fileSize: 4 * sendChunk, size: 4 * sendChunk, readUpTo: 200_000, wantErr: true},
		"reader stalls past the deadline":      {fileSize: 4 * sendChunk, size: 4 * sendChunk, stall: true, wantErr: true},
	} {
		t.Run(name, func(t *testing.T) {
			data := make([]byte, tc.fileSize)
			for i := range data {
				data[i] = byte(i * 7 / 5)
			}
			path := filepath.Join(t.TempDir(), "f")
			must(t, os.WriteFile(path, data, 0o644))
			f, err := os.Open(path)
			must(t, err)
			defer f.Close()

			server, client := tcpPair(t)
			must(t, server.SetWriteBuffer(16<<10))
			must(t, client.SetReadBuffer(16<<10))
			deadline := time.Minute
			if tc.stall {
				deadline = 200 * time.Millisecond
			}
			must(t, server.SetWriteDeadline(time.Now().Add(deadline)))
			returned := make(chan struct{})
			got := make(chan []byte, 1)
			go func() {
				if tc.stall {
					<-returned
				}
				var b bytes.Buffer
				buf := make([]byte, 4096)
				for {
					n, err := client.Read(buf)
					b.Write(buf[:n])
					if tc.readUpTo > 0 && b.Len() >= tc.readUpTo {
						client.Close()
						break
					}
					if err != nil {
						break
					}
				}
				got <- b.Bytes()
			}()
			sent, err := sendWhole(server, hdr, f, tc.size)
			close(returned)
			server.Close()
			b := <-got
			if tc.stall && !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("error %v, want the write deadline's", err)
			}
			if sent != tc.wantSent && !((tc.readUpTo > 0 || tc.stall) && sent < tc.size) {
				t.Errorf("sent %d, want %d", sent, tc.wantSent)
			}
			if (err != nil) != tc.wantErr || tc.wantEOF != errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("error %v, want error %v (end of file %v)", err, tc.wantErr, tc.wantEOF)
			}
			if tc.readUpTo > 0 || tc.stall {
				return
			}
			want := append(append([]byte{}, hdr...), data[:tc.wantSent]...)
			if !bytes.Equal(b, want) {
				t.Errorf("reader got %d bytes, want the header and %d bytes of the file (%d)", len(b), tc.wantSent, len(want))
			}
		})
	}
}

// tcpPair is both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	defer l.Close()
	c, err := net.DialTCP("tcp", nil, l.Addr().(*net.TCPAddr))
	must(t, err)
	s, err := l.AcceptTCP()
	must(t, err)
	t.Cleanup(func() { c.Close(); s.Close() })
	return s, c
}
