package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/pxe/tftp"
)

const (
	tftpFileSize = 64 << 20
	tftpBlksize  = 1468
	// tftpWindow is the windowsize (RFC 7440) atftp asks for in the
	// windowed rows: metal's default cap, 64 × 1468 bytes in flight,
	// well within a socket's default receive buffer.
	tftpWindow = 64
)

// benchTFTP measures one 64 MiB download at blksize 1468 from metal's TFTP
// server (pxe/tftp, run in this process on a loopback port: `metal serve`
// serves only the iPXE binaries over TFTP), from tftpd-hpa and from
// atftpd, alternating: with curl (lockstep: no windowsize), and with atftp
// asking for windowsize (tftpd-hpa answers it lockstep; metal and atftpd
// negotiate it).
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
	atftp, err := lookTool("atftp")
	if err != nil {
		return nil, err
	}
	fetched := filepath.Join(cfg.work, "tftp-fetched")
	defer os.Remove(fetched)

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
	metalAddr := conn.LocalAddr().String()

	// tftpd-hpa
	hpaAddr, hpa, err := startTFTPPeer(cfg, "in.tftpd", func(addr string) []string { return tftpdArgs(root, addr) })
	if err != nil {
		return nil, err
	}
	defer hpa.stop()
	// atftpd: the one Debian TFTP server with windowsize.
	atftpdAddr, atftpd, atftpdErr := startAtftpd(cfg, root)
	if atftpdErr == nil {
		defer atftpd.stop()
	}

	var metal, peer, metalW, peerW, metalA, atftpdW, limit []float64
	for run := range cfg.runs + 1 {
		m, err := curlTFTP(ctx, curl, "tftp://"+metalAddr+"/"+name)
		if err != nil {
			return nil, fmt.Errorf("metal: %w", err)
		}
		rt, err := udpRoundTrips(tftpBlksize, tftpFileSize/tftpBlksize)
		if err != nil {
			return nil, fmt.Errorf("loopback round trip: %w", err)
		}
		h, err := curlTFTP(ctx, curl, "tftp://"+hpaAddr+"/"+name)
		if err != nil {
			return nil, fmt.Errorf("tftpd-hpa: %w", err)
		}
		mw, err := atftpGet(ctx, atftp, metalAddr, name, fetched)
		if err != nil {
			return nil, fmt.Errorf("metal: %w", err)
		}
		hw, err := atftpGet(ctx, atftp, hpaAddr, name, fetched)
		if err != nil {
			return nil, fmt.Errorf("tftpd-hpa: %w", err)
		}
		if err := hpa.exited(); err != nil {
			return nil, err
		}
		var ma, aw float64
		if atftpdErr == nil {
			if ma, err = atftpGet(ctx, atftp, metalAddr, name, fetched); err != nil {
				return nil, fmt.Errorf("metal: %w", err)
			}
			if aw, err = atftpGet(ctx, atftp, atftpdAddr, name, fetched); err != nil {
				return nil, fmt.Errorf("atftpd: %w", err)
			}
		}
		if run == 0 {
			continue // a warm-up: page cache, first transfer's sockets
		}
		cfg.logger.Info("tftp run", "run", run,
			"metal_mib_s", fmt.Sprintf("%.1f", m), "tftpd_hpa_mib_s", fmt.Sprintf("%.1f", h),
			"metal_window_mib_s", fmt.Sprintf("%.1f", mw), "tftpd_hpa_window_mib_s", fmt.Sprintf("%.1f", hw),
			"atftpd_window_mib_s", fmt.Sprintf("%.1f", aw))
		metal, peer, limit = append(metal, m), append(peer, h), append(limit, rt)
		metalW, peerW = append(metalW, mw), append(peerW, hw)
		metalA, atftpdW = append(metalA, ma), append(atftpdW, aw)
	}
	windowed := fmt.Sprintf("TFTP 64 MiB, blksize 1468, windowsize %d (atftp)", tftpWindow)
	hpaW := compare(windowed, "MiB/s", statsOf(metalW), "tftpd-hpa", statsOf(peerW), 3.0)
	hpaW.Note = strings.TrimPrefix(hpaW.Note+"; ", "; ") + "tftpd-hpa has no windowsize: it answers lockstep"
	lockstep := compare("TFTP 64 MiB, blksize 1468 (curl)", "MiB/s", statsOf(metal), "tftpd-hpa", statsOf(peer), 1.0)
	lockstep.Limit = &Limit{What: "loopback UDP round trips", Value: statsOf(limit)}
	rows := []Result{lockstep, hpaW}
	if atftpdErr != nil {
		return append(rows, Result{Measure: windowed + " vs atftpd", When: time.Now(),
			Note: "n/a: " + atftpdErr.Error()}), nil
	}
	return append(rows, compare(windowed, "MiB/s", statsOf(metalA), "atftpd", statsOf(atftpdW), 1.0)), nil
}

// startTFTPPeer starts a TFTP server program on a free loopback port.
func startTFTPPeer(cfg *config, program string, args func(addr string) []string) (string, *proc, error) {
	path, err := lookTool(program)
	if err != nil {
		return "", nil, err
	}
	return startTFTPAt(cfg, path, args)
}

func startTFTPAt(cfg *config, path string, args func(addr string) []string) (string, *proc, error) {
	program := filepath.Base(path)
	port, err := freePort("udp")
	if err != nil {
		return "", nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := startProc(program, filepath.Join(cfg.work, program+".log"), nil, append([]string{path}, args(addr)...)...)
	if err != nil {
		return "", nil, err
	}
	return addr, p, nil
}

// atftpdCache is where the benchmark unpacks Debian's atftpd.
const atftpdCache = "/var/cache/metal-bench/atftpd"

// startAtftpd starts atftpd serving root with windowsize on (its
// default). Debian's atftpd conflicts with tftpd-hpa (both are
// in.tftpd): installing it removes the other peer, so the benchmark
// unpacks its binary from the package (apt-get download, dpkg-deb -x)
// into atftpdCache instead, once.
func startAtftpd(cfg *config, root string) (string, *proc, error) {
	bin := filepath.Join(atftpdCache, "root", "usr", "sbin", "atftpd")
	if _, err := os.Stat(bin); err != nil {
		if err := unpackDeb(cfg.ctx, "atftpd", atftpdCache); err != nil {
			return "", nil, err
		}
	}
	return startTFTPAt(cfg, bin, func(addr string) []string {
		host, port, _ := strings.Cut(addr, ":")
		return []string{"--daemon", "--no-fork", "--bind-address", host, "--port", port,
			"--user", "root.root", "--logfile", "/dev/null", root}
	})
}

// unpackDeb downloads a Debian package into dir and unpacks it under
// dir/root, without installing it.
func unpackDeb(ctx context.Context, pkg, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	get := exec.CommandContext(ctx, "apt-get", "download", pkg)
	get.Dir = dir
	if out, err := get.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s: %v: %s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if len(debs) == 0 {
		return fmt.Errorf("apt-get download %s left no .deb in %s", pkg, dir)
	}
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], filepath.Join(dir, "root")).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg-deb -x %s: %v: %s", debs[0], err, out)
	}
	return nil
}

// atftpGet downloads name from addr with atftp asking for blksize 1468 and
// windowsize tftpWindow into local, checks the size and returns MiB/s
// from the client's wall time (atftp prints none; its start-up is a few
// milliseconds of a transfer of a second or more).
func atftpGet(ctx context.Context, atftp, addr, name, local string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	os.Remove(local)
	start := time.Now()
	out, err := exec.CommandContext(ctx, atftp, "--option", fmt.Sprintf("windowsize %d", tftpWindow),
		"--option", fmt.Sprintf("blksize %d", tftpBlksize), "-g", "-r", name, "-l", local, host, port).CombinedOutput()
	secs := time.Since(start).Seconds()
	if err != nil {
		return 0, fmt.Errorf("atftp %s: %v: %s", addr, err, out)
	}
	fi, err := os.Stat(local)
	if err != nil {
		return 0, err
	}
	if fi.Size() != tftpFileSize {
		return 0, fmt.Errorf("atftp %s: fetched %d bytes, want %d", addr, fi.Size(), tftpFileSize)
	}
	return float64(fi.Size()) / (1 << 20) / secs, nil
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

// udpRoundTrips is the limit of a lockstep transfer on this machine: n
// round trips over loopback of a block of blksize bytes (and its 4-byte
// header) answered by a 4-byte ACK, between two blocking sockets with
// nothing else to do. MiB/s of blocks. A block whose ACK does not come
// within 100 ms (loopback drops datagrams when the host is very busy) is
// sent again, as a TFTP server would.
func udpRoundTrips(blksize, n int) (float64, error) {
	open := func() (int, *unix.SockaddrInet4, error) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, nil, err
		}
		tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
		err = errors.Join(unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv),
			unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
		sa, serr := unix.Getsockname(fd)
		if err = errors.Join(err, serr); err != nil {
			unix.Close(fd)
			return -1, nil, err
		}
		return fd, sa.(*unix.SockaddrInet4), nil
	}
	sender, _, err := open()
	if err != nil {
		return 0, err
	}
	defer unix.Close(sender)
	client, clientAddr, err := open()
	if err != nil {
		return 0, err
	}
	defer unix.Close(client)
	var done atomic.Bool
	acked := make(chan error, 1)
	go func() {
		buf := make([]byte, 4+blksize)
		ack := []byte{0, 4, 0, 0}
		for !done.Load() {
			_, from, err := unix.Recvfrom(client, buf, 0)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err == nil {
				err = unix.Sendto(client, ack, 0, from)
			}
			if err != nil {
				acked <- err
				return
			}
		}
		acked <- nil
	}()
	defer func() { done.Store(true); <-acked }()
	block, ack := make([]byte, 4+blksize), make([]byte, 4)
	start := time.Now()
	for i, resent := 0, 0; i < n; {
		if err := unix.Sendto(sender, block, 0, clientAddr); err != nil {
			return 0, err
		}
		_, _, err := unix.Recvfrom(sender, ack, 0)
		// A receive with SO_RCVTIMEO is not restarted after a signal, and
		// Go's runtime sends them (preemption): wait on for the same ack.
		for errors.Is(err, unix.EINTR) {
			_, _, err = unix.Recvfrom(sender, ack, 0)
		}
		switch {
		case errors.Is(err, unix.EAGAIN) && resent < 100:
			resent++
		case err != nil:
			return 0, err
		default:
			i++
		}
	}
	secs := time.Since(start).Seconds()
	return float64(n*blksize) / (1 << 20) / secs, nil
}
