package pxe

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net"
)

// Token is a machine's script token: an HMAC of its MAC under key, so the
// HTTP server can check it without storing it. Empty when key is empty.
func Token(key []byte, mac net.HardwareAddr) string {
	if len(key) == 0 {
		return ""
	}
	h := hmac.New(sha256.New, key)
	h.Write([]byte(mac.String()))
	return hex.EncodeToString(h.Sum(nil)[:16])
}
