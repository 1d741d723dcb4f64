package tftp

import (
	"bytes"
	"io"
	"net/netip"
	"os"
	"testing"
)

// FuzzOpen drives the server's name resolution (iPXE names first, then the
// per-machine root) with arbitrary names. Whatever the name, the file
// outside the root is never opened. Seeds: testdata/fuzz/FuzzOpen.
func FuzzOpen(f *testing.F) {
	ts := startServer(f, nil)
	secret, err := os.ReadFile(ts.secret)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, name string) {
		file, fi, err := ts.srv.openFile(netip.Addr{}, name)
		if err != nil {
			return
		}
		defer file.Close()
		if !fi.Mode().IsRegular() {
			t.Fatalf("openFile(%q) returned a %v", name, fi.Mode())
		}
		b, _ := io.ReadAll(io.LimitReader(file, int64(len(secret))+1))
		if bytes.Equal(b, secret) {
			t.Fatalf("openFile(%q) reached the file outside the root", name)
		}
	})
}
