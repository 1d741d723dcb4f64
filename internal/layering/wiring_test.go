package layering

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// cmd/metal only wires (ARCHITECTURE.md): a verb parses its flags, calls
// the package that owns the behaviour and renders through a view. These
// bounds are where behaviour has crept back in.
const (
	maxWiringLines = 3000 // all of cmd/metal's non-test Go
	maxVerbLines   = 200  // one file of it, a verb or a shared piece
)

// TestCmdIsWiring counts the lines of cmd/metal's non-test Go files (its
// internal packages, arguments and views, are apart).
func TestCmdIsWiring(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "cmd", "metal")
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no Go files in %s: %v", dir, err)
	}
	total := 0
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		n := bytes.Count(b, []byte("\n"))
		total += n
		if n > maxVerbLines {
			t.Errorf("cmd/metal/%s is %d lines, over %d: move its flags to cmd/metal/internal/arguments, its output to internal/view, its behaviour to the package that owns it", filepath.Base(p), n, maxVerbLines)
		}
	}
	if total >= maxWiringLines {
		t.Errorf("cmd/metal is %d lines of Go, want under %d: move behaviour to the packages that own it (ARCHITECTURE.md)", total, maxWiringLines)
	}
	t.Logf("cmd/metal: %d lines", total)
}
