package http

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
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

// BenchmarkScriptConn is one script request on a kept-alive connection
// through the whole server (the script connection's request parsing,
// deadlines and answer, the access log, the policy) over net.Pipe: what a
// script costs in the server's own code, without the kernel's share,
// which is the same for any server. A raw client writes each request and
// reads its answer, as a machine's iPXE does.
func BenchmarkScriptConn(b *testing.B) {
	srv := startServer(b).srv
	ln := &pipeListener{conns: make(chan net.Conn, 1), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.ServeListener(ctx, ln) }()
	defer func() { cancel(); <-served }()
	client, server := net.Pipe()
	defer client.Close()
	ln.conns <- server
	req := []byte("GET /ipxe/" + macOther + "?token=s3cret-token HTTP/1.1\r\nHost: 192.0.2.1\r\nUser-Agent: iPXE/1.21.1\r\n\r\n")
	r := bufio.NewReader(client)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Write(req); err != nil {
			b.Fatal(err)
		}
		if err := readResponse(r); err != nil {
			b.Fatal(err)
		}
	}
}

// readResponse reads one 200 answer with a Content-Length from r.
func readResponse(r *bufio.Reader) error {
	status, err := r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("status line %q", status)
	}
	length := -1
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			length, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if length < 0 {
		return errors.New("answer without a Content-Length")
	}
	_, err = r.Discard(length)
	return err
}

// pipeListener hands out the connections sent on conns.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 80} }
