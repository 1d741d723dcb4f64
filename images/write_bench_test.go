package images_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/metal-dev/metal/images"
)

// BenchmarkWrite measures what the agent's install does: an image file
// through images.Write into another file, checksum verified, then fsync.
// The source is read from the page cache (written just before), as a fast
// network would deliver it. Profile with
//
//	go test ./images -run '^$' -bench Write -benchtime 5x -cpuprofile cpu.out
func BenchmarkWrite(b *testing.B) {
	const size = 256 << 20
	raw := diskImage(size, 7)
	for _, format := range []string{images.FormatRaw, images.FormatZst, images.FormatGz} {
		for _, alg := range []string{"sha256", "sha512"} {
			b.Run(format+"/"+alg, func(b *testing.B) {
				src := raw
				if format != images.FormatRaw {
					src = compressGo(b, format, raw)
				}
				sum := sha256Of(src)
				if alg == "sha512" {
					sum = sha512Of(src)
				}
				dir := b.TempDir()
				srcFile := filepath.Join(dir, "image")
				if err := os.WriteFile(srcFile, src, 0o600); err != nil {
					b.Fatal(err)
				}
				dst := filepath.Join(dir, "disk")
				b.SetBytes(size)
				var writing, syncing time.Duration
				cpu0 := cpuTime(b)
				for b.Loop() {
					w, s, err := writeFile(dst, srcFile, format, sum)
					if err != nil {
						b.Fatal(err)
					}
					writing += w
					syncing += s
				}
				// Where the time goes: images.Write itself, and the fsync
				// that waits for what it left dirty in the page cache.
				b.ReportMetric(writing.Seconds()/float64(b.N), "write-s/op")
				b.ReportMetric(syncing.Seconds()/float64(b.N), "fsync-s/op")
				// CPU time (user and system) is what a busy machine
				// charges: it is steadier than wall time under load.
				b.ReportMetric((cpuTime(b)-cpu0).Seconds()/float64(b.N), "cpu-s/op")
			})
		}
	}
}

// writeFile writes src to dst as the agent does and returns how long
// images.Write and the fsync after it took.
func writeFile(dst, src, format, sum string) (writing, syncing time.Duration, err error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return 0, 0, err
	}
	defer out.Close()
	start := time.Now()
	if _, err := images.Write(context.Background(), out, in, images.WriteOptions{Format: format, Checksum: sum}); err != nil {
		return 0, 0, err
	}
	writing = time.Since(start)
	if err := out.Sync(); err != nil {
		return 0, 0, err
	}
	syncing = time.Since(start) - writing
	return writing, syncing, out.Close()
}

// cpuTime is the user and system time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
