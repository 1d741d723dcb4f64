package tftp

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/metal-dev/metal/pxe/bootfiles"
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

// BenchmarkStorm measures many lockstep transfers at once, as a rack
// that netboots together asks of the server: 200 clients each fetch
// Debian's undionly.kpxe (74 KiB) with blksize 1456, as iPXE's ROM does.
// cpu-s/op is the whole process's CPU, the clients' included.
// The figures of one machine compare only with each other: a host busy
// with other work slows these round trips more than any change here.
func BenchmarkStorm(b *testing.B) {
	const clients = 200
	ts := startServer(b, nil)
	fi, err := os.Stat(filepath.Join(bootfiles.DefaultDir, bootfiles.BIOS))
	if err != nil {
		b.Fatalf("%v (install the Debian package ipxe)", err)
	}
	size := fi.Size()
	cpu0 := cpuTime()
	for b.Loop() {
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for range clients {
			wg.Go(func() {
				c, err := tftplib.NewClient(ts.addr.String())
				if err != nil {
					errs <- err
					return
				}
				c.SetBlockSize(1456)
				wt, err := c.Receive(bootfiles.BIOS, "octet")
				if err != nil {
					errs <- err
					return
				}
				if n, err := wt.WriteTo(io.Discard); err != nil || n != size {
					errs <- fmt.Errorf("received %d bytes, err %v", n, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "cpu-s/op")
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
