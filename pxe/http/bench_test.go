package http

import (
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkLargeFile measures one 64 MiB image download per iteration over
// loopback, through the access log and the confined root (sendfile path).
// Compare against nginx serving the same file for the ratio.
func BenchmarkLargeFile(b *testing.B) {
	const size = 64 << 20
	ts := startServer(b)
	data := make([]byte, size)
	rand.Read(data)
	must(b, os.WriteFile(filepath.Join(ts.files, "image.raw"), data, 0o644))
	c := clientFrom("127.0.0.1")
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		resp, err := c.Get(ts.url + "/files/image.raw")
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size {
			b.Fatalf("read %d bytes, err %v", n, err)
		}
	}
}
