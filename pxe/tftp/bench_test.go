package tftp

import (
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"

	tftplib "github.com/pin/tftp/v3"
)

// BenchmarkTransfer measures TFTP throughput over loopback: one 8 MiB file
// per iteration, fetched by pin/tftp's client (so the figure is the
// server's, not a subprocess's start-up). Compare against tftpd-hpa with
// the same client for the ratio.
func BenchmarkTransfer(b *testing.B) {
	const size = 8 << 20
	cases := map[string]struct {
		blksize    int
		anticipate uint
	}{
		"blksize=512":              {blksize: 512},
		"blksize=1468":             {blksize: 1468},
		"blksize=8192":             {blksize: 8192},
		"blksize=1468/anticipate8": {blksize: 1468, anticipate: 8},
	}
	for name, bc := range cases {
		b.Run(name, func(b *testing.B) {
			ts := startServer(b, func(c *Config) { c.Anticipate = bc.anticipate })
			data := make([]byte, size)
			rand.Read(data)
			mustT(b, os.WriteFile(filepath.Join(ts.root, "big"), data, 0o644))
			c, err := tftplib.NewClient(ts.addr.String())
			if err != nil {
				b.Fatal(err)
			}
			if bc.blksize > 512 {
				c.SetBlockSize(bc.blksize)
			}
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				wt, err := c.Receive("big", "octet")
				if err != nil {
					b.Fatal(err)
				}
				n, err := wt.WriteTo(io.Discard)
				if err != nil || n != size {
					b.Fatalf("received %d bytes, err %v", n, err)
				}
			}
		})
	}
}
