package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/metal-dev/metal/images/agent"
	"github.com/metal-dev/metal/pxe/agentapi"
)

// wipeBenchSize is how much of the device each run erases: the whole of it.
const wipeBenchSize = 512 << 20

// benchWipe compares wipe = "zero", the agent's EraseDisk (a full
// overwrite with zeros through O_DIRECT in 4 MiB writes, four in flight,
// an fsync, then the read-back of both ends and 256 samples across the
// device, four reads in flight), with
// `dd if=/dev/zero bs=4M oflag=direct conv=fsync` over the same device.
// The device is a loop device over a file (direct I/O to its file where
// the kernel allows) when the bench runs as root, else the file itself.
// dd writing zeros with O_DIRECT is all the device can do, so it is also
// the row's limit: metal pays for its verification on top of it.
func benchWipe(cfg *config) ([]Result, error) {
	return wipeRow(cfg, wipeBenchSize)
}

func wipeRow(cfg *config, size int64) ([]Result, error) {
	dir := filepath.Join(cfg.work, "wipe")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// Random content, so the first wipe's read-back would see a region
	// it skipped; on disk and out of the page cache, as a disk's is.
	backing := filepath.Join(dir, "disk.img")
	if err := writeRandomFile(backing, size); err != nil {
		return nil, err
	}
	if err := syncFile(backing); err != nil {
		return nil, err
	}
	if err := dropCached(backing); err != nil {
		return nil, err
	}
	dd, err := lookTool("dd")
	if err != nil {
		return nil, err
	}
	dev, what, detach, err := wipeDevice(cfg, backing)
	if err != nil {
		return nil, err
	}
	defer detach()
	mib := float64(size) / (1 << 20)
	var metal, peer []float64
	wipe := func() error {
		start := time.Now()
		rec, err := agent.EraseDisk(cfg.ctx, dev, agentapi.WipeZero, nil)
		if err != nil {
			return fmt.Errorf("wipe = zero of %s: %w", dev, err)
		}
		secs := time.Since(start).Seconds()
		if rec.Bytes != uint64(size) || !rec.Verified || rec.Mechanism != "overwrite" {
			return fmt.Errorf("wipe = zero of %s: the erase record says %+v, want %d bytes overwritten and verified", dev, rec, size)
		}
		metal = append(metal, mib/secs)
		return nil
	}
	zero := func() error {
		start := time.Now()
		cmd := exec.CommandContext(cfg.ctx, dd, "if=/dev/zero", "of="+dev, "bs=4M", fmt.Sprintf("count=%d", size/(4<<20)),
			"oflag=direct", "conv=fsync,notrunc", "status=none")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("dd: %v: %s", err, out)
		}
		peer = append(peer, mib/time.Since(start).Seconds())
		return nil
	}
	for i := range cfg.runs {
		if err := cfg.ctx.Err(); err != nil {
			return nil, err
		}
		// Each goes first in turn: the device may be faster after a rest.
		order := []func() error{wipe, zero}
		if i%2 == 1 {
			order[0], order[1] = zero, wipe
		}
		for _, run := range order {
			if err := run(); err != nil {
				return nil, err
			}
		}
	}
	r := compare(fmt.Sprintf("wipe = \"zero\" of %d MiB (%s), verified", size>>20, what), "MiB/s",
		statsOf(metal), "dd if=/dev/zero oflag=direct", statsOf(peer), 0.9)
	// Not the same work: metal reads back what it wrote, dd does not, and
	// dd is the device's limit, so 0.9 leaves metal a tenth for that.
	r.Note = strings.TrimPrefix(r.Note+"; dd only writes, metal also reads back: target below 1.0", "; ")
	r.Limit = &Limit{What: "dd if=/dev/zero oflag=direct alone: the device's direct write speed", Value: statsOf(peer)}
	return []Result{r}, nil
}

// wipeDevice attaches file as a loop device when it can (root), and
// says what the row erases.
func wipeDevice(cfg *config, file string) (dev, what string, detach func(), err error) {
	none := func() {}
	if os.Geteuid() != 0 {
		return file, "a file: not root, so no loop device", none, nil
	}
	losetup, err := lookTool("losetup")
	if err != nil {
		return "", "", none, err
	}
	out, err := exec.CommandContext(cfg.ctx, losetup, "--find", "--show", "--direct-io=on", file).CombinedOutput()
	if err != nil {
		return "", "", none, fmt.Errorf("losetup: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	return dev, "a loop device", func() {
		if out, err := exec.Command(losetup, "-d", dev).CombinedOutput(); err != nil {
			cfg.logger.Error("detach loop device", "dev", dev, "err", err, "out", strings.TrimSpace(string(out)))
		}
	}, nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
