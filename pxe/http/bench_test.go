package http

import (
	"crypto/rand"
	"io"
	nethttp "net/http"
	"net/http/httptest"
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

// BenchmarkScriptHandler is one script request through the boot server's
// handler (access log, mux, policy, token check, cached script) without
// the network: the part of a script's cost that is metal's own.
func BenchmarkScriptHandler(b *testing.B) {
	srv := startServer(b).srv
	req := httptest.NewRequest("GET", "/ipxe/"+macOther+"?token=s3cret-token", nil)
	req.RemoteAddr = "192.0.2.9:1234"
	w := &discardWriter{h: nethttp.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		srv.Handler().ServeHTTP(w, req)
		if w.code != 200 {
			b.Fatalf("status %d", w.code)
		}
	}
}

// discardWriter is a ResponseWriter that keeps nothing but the status.
type discardWriter struct {
	h    nethttp.Header
	code int
}

func (w *discardWriter) Header() nethttp.Header { return w.h }
func (w *discardWriter) WriteHeader(code int)   { w.code = code }
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = 200
	}
	return len(p), nil
}
