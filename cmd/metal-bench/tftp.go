package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/pxe/tftp"
)

const (
	tftpFileSize = 64 << 20
	tftpBlksize  = 1468
)

// benchTFTP measures one 64 MiB download at blksize 1468 with curl from
// metal's TFTP server (pxe/tftp, run in this process on a loopback port:
// `metal serve` serves only the iPXE binaries over TFTP) and from
// tftpd-hpa, alternating.
func benchTFTP(cfg *config) ([]Result, error) {
	root := filepath.Join(cfg.work, "tftp-root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	const name = "image.raw"
	if err := writeRandomFile(filepath.Join(root, name), tftpFileSize); err != nil {
		return nil, err
	}
	curl, err := lookTool("curl")
	if err != nil {
		return nil, err
	}

	// metal
	r, err := bootfiles.OpenRoot(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	srv, err := tftp.New(tftp.Config{Root: r, Logger: cfg.quiet})
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(cfg.ctx)
	served := make(chan error, 1)
	go func() { served <- srv.ServeConn(ctx, conn) }()
	defer func() { cancel(); <-served }()
	metalURL := fmt.Sprintf("tftp://%s/%s", conn.LocalAddr(), name)

	// tftpd-hpa
	port, err := freePort("udp")
	if err != nil {
		return nil, err
	}
	hpa, err := lookTool("in.tftpd")
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := startProc("in.tftpd", filepath.Join(cfg.work, "tftpd.log"), nil, append([]string{hpa}, tftpdArgs(root, addr)...)...)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	peerURL := fmt.Sprintf("tftp://%s/%s", addr, name)

	var metal, peer []float64
	for run := range cfg.runs + 1 {
		m, err := curlTFTP(ctx, curl, metalURL)
		if err != nil {
			return nil, fmt.Errorf("metal: %w", err)
		}
		if err := p.exited(); err != nil {
			return nil, err
		}
		h, err := curlTFTP(ctx, curl, peerURL)
		if err != nil {
			return nil, fmt.Errorf("tftpd-hpa: %w", err)
		}
		if run == 0 {
			continue // a warm-up: page cache, first transfer's sockets
		}
		cfg.logger.Info("tftp run", "run", run, "metal_mib_s", fmt.Sprintf("%.1f", m), "tftpd_hpa_mib_s", fmt.Sprintf("%.1f", h))
		metal, peer = append(metal, m), append(peer, h)
	}
	return []Result{
		compare("TFTP 64 MiB, blksize 1468 (curl)", "MiB/s", statsOf(metal), "tftpd-hpa", statsOf(peer), 1.0),
		{Measure: "TFTP 64 MiB, windowsize", When: time.Now(),
			Note: "n/a: pin/tftp v3.1.0 does not negotiate windowsize (RFC 7440), nor do tftpd-hpa or curl"},
	}, nil
}

// curlTFTP downloads url with blksize 1468, checks the size and returns
// MiB/s as curl timed it.
func curlTFTP(ctx context.Context, curl, url string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, curl, "-sS", "-o", "/dev/null", "--tftp-blksize", strconv.Itoa(tftpBlksize),
		"-w", "%{size_download} %{time_total}", url).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("curl %s: %v: %s", url, err, out)
	}
	return transferRate(string(out), tftpFileSize)
}

// transferRate reads curl's "-w '%{size_download} %{time_total}'" and
// returns MiB/s, checking the whole file came.
func transferRate(w string, want int64) (float64, error) {
	f := strings.Fields(w)
	if len(f) != 2 {
		return 0, fmt.Errorf("curl printed %q, want size and time", w)
	}
	size, err1 := strconv.ParseInt(f[0], 10, 64)
	secs, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil || secs <= 0 {
		return 0, fmt.Errorf("curl printed %q, want size and time", w)
	}
	if size != want {
		return 0, fmt.Errorf("downloaded %d bytes, want %d", size, want)
	}
	return float64(size) / (1 << 20) / secs, nil
}

// writeRandomFile writes size bytes that do not compress (an image's
// worth of data, not a sparse file of zeros).
func writeRandomFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	var x uint64 = 0x9e3779b97f4a7c15
	for written := int64(0); written < size; written += int64(len(buf)) {
		for i := 0; i+8 <= len(buf); i += 8 {
			// xorshift: fast, and incompressible enough.
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			for j := range 8 {
				buf[i+j] = byte(x >> (8 * j))
			}
		}
		n := min(int64(len(buf)), size-written)
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
