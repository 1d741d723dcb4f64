// Package images fetches, verifies and keeps the files machines boot and
// install: kernels, initrds and disk images.
package images

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Dir is a directory of staged image files, laid out as IMAGE/FILE, that the
// HTTP boot server serves under /images/.
type Dir struct {
	Path string
}

// StageLocal copies the local file at src into the directory as
// image/name, verifying checksum ("sha256:<hex>", "sha512:<hex>" or "" for
// none) on the way. The copy is written to a temporary name and renamed, so
// a failed or interrupted copy never leaves a file that could be served.
// Kernels and initrds are small, so every call copies and verifies again:
// a checksum changed in the site is always checked against the file.
func (d Dir) StageLocal(image, name, src, checksum string) (string, error) {
	rel := filepath.Join(image, name)
	dst := filepath.Join(d.Path, rel)
	srcInfo, err := os.Stat(src)
	if err != nil {
		return "", fmt.Errorf("stage %s: %w", src, err)
	}
	h, want, err := hasher(checksum)
	if err != nil {
		return "", fmt.Errorf("stage %s: %w", src, err)
	}
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("stage %s: %w", src, err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", fmt.Errorf("stage %s: %w", src, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+name+".*")
	if err != nil {
		return "", fmt.Errorf("stage %s: %w", src, err)
	}
	defer os.Remove(tmp.Name())
	var w io.Writer = tmp
	if h != nil {
		w = io.MultiWriter(tmp, h)
	}
	if _, err := io.Copy(w, in); err != nil {
		tmp.Close()
		return "", fmt.Errorf("stage %s: %w", src, err)
	}
	if h != nil {
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			tmp.Close()
			return "", fmt.Errorf("stage %s: %w: the site says %s, the file has %s", src, ErrChecksum, checksum, strings.SplitN(checksum, ":", 2)[0]+":"+got)
		}
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", fmt.Errorf("stage %s: %w", src, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("stage %s: %w", src, err)
	}
	if err := os.Chtimes(tmp.Name(), srcInfo.ModTime(), srcInfo.ModTime()); err != nil {
		return "", fmt.Errorf("stage %s: %w", src, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("stage %s: %w", src, err)
	}
	return rel, nil
}

// hasher returns the hash a checksum names and its expected hex digest.
func hasher(checksum string) (hash.Hash, string, error) {
	if checksum == "" {
		return nil, "", nil
	}
	alg, want, _ := strings.Cut(checksum, ":")
	switch alg {
	case "sha256":
		return sha256.New(), want, nil
	case "sha512":
		return sha512.New(), want, nil
	}
	return nil, "", fmt.Errorf("unsupported checksum %q: use sha256:<hex> or sha512:<hex>", checksum)
}
