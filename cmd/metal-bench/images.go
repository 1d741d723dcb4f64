package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/metal-dev/metal/images"
)

const (
	// imageBenchSize is the raw size of the benchmark's disk image: half
	// random data, half zeros, as a freshly built OS image roughly is.
	imageBenchSize = 512 << 20
	fetchBenchSize = 512 << 20
)

// benchImageWrite compares images.Write, what the install agent runs, with
// dd writing the same image to the same file, all ending with an fsync
// (conv=fsync). images.Write writes with O_DIRECT where the file takes it,
// so dd is measured both ways: through the page cache (the plain `dd bs=4M
// conv=fsync`) and with oflag=direct. For the zstd image the peers are
// `zstd -dc | dd`. metal also hashes the image as it writes (sha256), which
// dd does not: the raw image is also compared with `sha256sum && dd
// oflag=direct`, the same work done by hand. On this VM page faults and
// page pins are dear: with 4 KiB-page buffers the verified raw write took
// a third more CPU than sha256 alone and reached ~76% of its limit; its
// buffers are huge pages now (images.alignedBufs). The source is in the
// page cache for every run (written just before), as a fast network would
// deliver it. Each program overwrites its
// own target file in place (created by its first run): on this VM a
// buffered overwrite of a file last written with O_DIRECT took 2-3× as
// long as one of a file last written through the page cache, so a shared
// target made each run's speed depend on who wrote before it. None of the
// target is in the page cache when a run starts, as a disk being
// provisioned is not (a buffered run leaves it all cached, and overwriting
// cached pages is faster).
// rawDiskPeer is the index of the raw image's peer that writes the disk
// and does nothing else: dd oflag=direct.
const rawDiskPeer = 1

func benchImageWrite(cfg *config) ([]Result, error) {
	dir := filepath.Join(cfg.work, "image-write")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	raw := filepath.Join(dir, "disk.raw")
	if err := writeRandomFile(raw, imageBenchSize/2); err != nil {
		return nil, err
	}
	if err := os.Truncate(raw, imageBenchSize); err != nil {
		return nil, err
	}
	zstd, err := lookTool("zstd")
	if err != nil {
		return nil, err
	}
	zst := raw + ".zst"
	if out, err := exec.Command(zstd, "-q", "-3", "-T0", "-f", "-o", zst, raw).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("zstd: %v: %s", err, out)
	}
	if _, err := lookTool("dd"); err != nil {
		return nil, err
	}
	target := func(who string) string { return filepath.Join(dir, "target-"+who+".img") }
	metalTarget := target("metal")
	// sameWork says a peer does what metal does (verify and write, or
	// decompress and write): its row's target is metal at least as fast.
	// A peer that only writes does less; the verified raw write is judged
	// by its limit instead.
	type peer struct {
		name, cmd, target string
		sameWork          bool
	}
	var results []Result
	for _, tc := range []struct {
		format, src string
		peers       []peer
	}{
		{images.FormatRaw, raw, []peer{
			{"dd", fmt.Sprintf("dd if=%s of=%s bs=4M conv=fsync,notrunc status=none", raw, target("dd")), target("dd"), false},
			// The disk alone (rawDiskPeer).
			{"dd oflag=direct", fmt.Sprintf("dd if=%s of=%s bs=4M oflag=direct conv=fsync,notrunc status=none", raw, target("dd-direct")), target("dd-direct"), false},
			// The same work as metal's by hand: verify the image, then write it.
			{"sha256sum && dd oflag=direct", fmt.Sprintf("sha256sum %s >/dev/null && dd if=%s of=%s bs=4M oflag=direct conv=fsync,notrunc status=none", raw, raw, target("dd-direct")), target("dd-direct"), true},
		}},
		{images.FormatZst, zst, []peer{
			// They decompress and write as metal does, without the
			// sha256 of the compressed stream metal adds.
			{"zstd -dc | dd", fmt.Sprintf("%s -dc %s | dd of=%s bs=4M iflag=fullblock conv=fsync,notrunc status=none", zstd, zst, target("dd")), target("dd"), true},
			{"zstd -dc | dd oflag=direct", fmt.Sprintf("%s -dc %s | dd of=%s bs=4M iflag=fullblock oflag=direct conv=fsync,notrunc status=none", zstd, zst, target("dd-direct")), target("dd-direct"), true},
		}},
	} {
		sum, err := sha256File(tc.src)
		if err != nil {
			return nil, err
		}
		var metal, limit []float64
		peers := make([][]float64, len(tc.peers))
		for range cfg.runs {
			if err := cfg.ctx.Err(); err != nil {
				return nil, err
			}
			if err := dropCached(metalTarget); err != nil {
				return nil, err
			}
			start := time.Now()
			if err := writeImage(cfg.ctx, metalTarget, tc.src, tc.format, sum); err != nil {
				return nil, err
			}
			metal = append(metal, imageBenchSize/(1<<20)/time.Since(start).Seconds())
			for i, p := range tc.peers {
				if err := dropCached(p.target); err != nil {
					return nil, err
				}
				start = time.Now()
				cmd := exec.CommandContext(cfg.ctx, "bash", "-o", "pipefail", "-c", p.cmd)
				if out, err := cmd.CombinedOutput(); err != nil {
					return nil, fmt.Errorf("%s: %v: %s", p.name, err, out)
				}
				peers[i] = append(peers[i], imageBenchSize/(1<<20)/time.Since(start).Seconds())
			}
			if tc.format == images.FormatRaw {
				// A verified raw write can go no faster than the slower
				// of the hash alone and the disk alone. dd stands for the
				// disk with one flush of its write cache at the end
				// (conv=fsync); images.Write flushes as it streams, so on a
				// disk whose cache drains slower than it fills (this VM's)
				// metal can pass this limit.
				start = time.Now()
				if _, err := sha256File(tc.src); err != nil {
					return nil, err
				}
				hash := imageBenchSize / (1 << 20) / time.Since(start).Seconds()
				limit = append(limit, min(hash, peers[rawDiskPeer][len(peers[rawDiskPeer])-1]))
			}
		}
		for i, p := range tc.peers {
			r := compare(fmt.Sprintf("image write 512 MiB %s to a file, fsync", tc.format), "MiB/s", statsOf(metal), p.name, statsOf(peers[i]), 1.0)
			if limit != nil {
				r.Limit = &Limit{What: "the slower of sha256 alone and dd oflag=direct", Value: statsOf(limit)}
			}
			if !p.sameWork {
				r = ofLimit(r, 0.95, p.name+" does not verify the image: judged by the limit, not the ratio")
			}
			results = append(results, r)
		}
	}
	return results, nil
}

// writeImage is the agent's write: src through images.Write into target,
// then fsync.
func writeImage(ctx context.Context, target, src, format, sum string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	n, err := images.Write(ctx, out, in, images.WriteOptions{Format: format, Checksum: sum})
	if err != nil {
		return err
	}
	if n != imageBenchSize {
		return fmt.Errorf("images.Write wrote %d bytes, want %d", n, imageBenchSize)
	}
	if err := out.Sync(); err != nil {
		return err
	}
	return out.Close()
}

// dropCached evicts a file's pages from the page cache (they are clean:
// every run ends with an fsync). A missing file has none.
func dropCached(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("drop %s from the page cache: %w", path, err)
	}
	return nil
}

func sha256File(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// benchImageFetch compares `metal images fetch` (resumable download into
// the cache, checksum verified, fsync, rename) with curl downloading the
// same file from the same nginx on loopback, followed by sync of the file.
// Each run starts from an empty cache. Its limit is the disk's: dd of the
// file from memory with fsync.
func benchImageFetch(cfg *config) ([]Result, error) {
	dir := filepath.Join(cfg.work, "image-fetch")
	www := filepath.Join(dir, "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	img := filepath.Join(www, "disk.raw")
	if err := writeRandomFile(img, fetchBenchSize); err != nil {
		return nil, err
	}
	sum, err := sha256File(img)
	if err != nil {
		return nil, err
	}
	addr, err := loopbackAddr()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, nginxConfig(dir, www, addr), 0o644); err != nil {
		return nil, err
	}
	nginx, err := lookTool("nginx")
	if err != nil {
		return nil, err
	}
	curl, err := lookTool("curl")
	if err != nil {
		return nil, err
	}
	np, err := startProc("nginx", filepath.Join(dir, "nginx.out"), nil, nginx, "-p", dir, "-c", conf, "-g", "daemon off;")
	if err != nil {
		return nil, err
	}
	defer np.stop()
	if err := waitTCP(cfg.ctx, np, addr); err != nil {
		return nil, err
	}
	url := "http://" + addr + "/disk.raw"
	siteFile := filepath.Join(dir, "site.hcl")
	if err := os.WriteFile(siteFile, fmt.Appendf(nil, "site \"bench\" {}\nimage \"disk\" {\n  disk     = %q\n  checksum = %q\n}\n", url, sum), 0o644); err != nil {
		return nil, err
	}
	state := filepath.Join(dir, "state")
	out := filepath.Join(dir, "curl.out")
	ddOut := filepath.Join(dir, "dd.out")
	var metal, peer, limit []float64
	for range cfg.runs {
		if err := np.exited(); err != nil {
			return nil, err
		}
		os.RemoveAll(state)
		start := time.Now()
		cmd := exec.CommandContext(cfg.ctx, cfg.metal, "images", "fetch", "--site", siteFile, "--state-dir", state, "--json")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("metal images fetch: %v: %s", err, b)
		}
		metal = append(metal, fetchBenchSize/(1<<20)/time.Since(start).Seconds())

		os.Remove(out)
		start = time.Now()
		cmd = exec.CommandContext(cfg.ctx, "bash", "-o", "pipefail", "-c", fmt.Sprintf("%s -sSf -o %s %s && sync %s", curl, out, url, out))
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("curl: %v: %s", err, b)
		}
		peer = append(peer, fetchBenchSize/(1<<20)/time.Since(start).Seconds())

		// The disk alone: the same bytes, already in memory (nginx has
		// just served them from the page cache), written and fsynced with
		// no network and no hash. A fetch can be no faster than the slower
		// of this and the download, and the download on loopback is the
		// faster here.
		os.Remove(ddOut)
		start = time.Now()
		cmd = exec.CommandContext(cfg.ctx, "dd", "if="+img, "of="+ddOut, "bs=4M", "conv=fsync", "status=none")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("dd: %v: %s", err, b)
		}
		limit = append(limit, fetchBenchSize/(1<<20)/time.Since(start).Seconds())
	}
	os.RemoveAll(state)
	r := compare("image fetch 512 MiB over HTTP into the cache (verified)", "MiB/s", statsOf(metal), "curl", statsOf(peer), 1.0)
	r.Limit = &Limit{What: "the disk alone: dd of the same file from memory, conv=fsync", Value: statsOf(limit)}
	return []Result{r}, nil
}
