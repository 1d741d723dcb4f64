package images_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/metal-dev/metal/images"
)

func TestStageLocal(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "vmlinuz")
	content := []byte("not really a kernel")
	if err := os.WriteFile(src, content, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	good := "sha256:" + hex.EncodeToString(sum[:])
	bad := "sha256:" + hex.EncodeToString(make([]byte, 32))
	d := images.Dir{Path: filepath.Join(dir, "staged")}

	if _, err := d.StageLocal("os", "vmlinuz", src, bad); !errors.Is(err, images.ErrChecksum) {
		t.Fatalf("bad checksum: err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(d.Path, "os", "vmlinuz")); !os.IsNotExist(err) {
		t.Fatalf("a file that failed its checksum was left to serve: %v", err)
	}
	for _, sum := range []string{good, ""} {
		rel, err := d.StageLocal("os", "vmlinuz", src, sum)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(d.Path, rel))
		if err != nil || string(got) != string(content) {
			t.Fatalf("staged %q, %v", got, err)
		}
	}
	if _, err := d.StageLocal("os", "vmlinuz", src, "md5:abc"); err == nil {
		t.Error("an unsupported checksum was accepted for an already staged file")
	}
	if _, err := d.StageLocal("os", "x", filepath.Join(dir, "missing"), ""); err == nil {
		t.Error("missing source staged")
	}
}
