package lab

import (
	"crypto/sha256"
	"encoding/hex"
)

// NetnsName is the network namespace of the lab in dir (an absolute path).
// It is derived from the directory, so two labs never share a namespace and
// a lab left behind by a crash is found from its directory alone.
func NetnsName(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return "metal-lab-" + hex.EncodeToString(sum[:4])
}
