// Package images fetches, verifies and keeps the files machines boot and
// install: kernels, initrds and disk images.
package images

import (
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"
	"strings"
)

// Hasher returns the hash a checksum ("sha256:<hex>" or "sha512:<hex>")
// names and the hex digest it expects; nil and "" for an empty checksum.
func Hasher(checksum string) (hash.Hash, string, error) {
	if checksum == "" {
		return nil, "", nil
	}
	alg, want, _ := strings.Cut(checksum, ":")
	if alg != "sha256" && alg != "sha512" {
		return nil, "", fmt.Errorf("unsupported checksum %q: use sha256:<hex> or sha512:<hex>", checksum)
	}
	return newHash(alg), want, nil
}

func newHash(alg string) hash.Hash {
	if alg == "sha512" {
		return sha512.New()
	}
	return sha256.New()
}
