package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metal-dev/metal/internal/procstat"
	"github.com/metal-dev/metal/pxe"
)

const (
	httpImageSize   = 1 << 30
	httpConcurrency = 200
	httpMachines    = 200
	httpLoadFor     = 5 * time.Second
	// httpDownloads is how many times each run downloads the image from
	// each server, alternating between them; the run's figure is their
	// median. One download a run varied by 1.6x from run to run here
	// (other work on the two cores), more than metal and nginx differ.
	httpDownloads = 3
)

// httpMAC is the MAC of bench machine i (1-based), as metalHTTPSite
// declares it.
func httpMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x52, 0x54, 0, 0xbb, byte(i >> 8), byte(i)}
}

// metalHTTPSite declares httpMachines machines on a network metal does not
// serve DHCP on (mode off): `metal serve` runs only TFTP and HTTP, on
// loopback.
func metalHTTPSite(dir, listen string) []byte {
	return fmt.Appendf(nil, `site "bench" {
  state  = "file://%s/state.db"
  listen = %q
}

network "bench" {
  subnet = %q
  mode   = "off"
}

machine "m" {
  for_each = { for i in range(1, %d) : format("m-%%03d", i) => i }
  mac      = format("52:54:00:bb:%%02x:%%02x", floor(each.value / 256), each.value %% 256)
  ip       = cidrhost(%q, each.value + 20)
}
`, dir, listen, dhcpSubnet, httpMachines+1, dhcpSubnet)
}

// benchHTTP compares `metal serve` with nginx: MiB/s of a 1 GiB image
// download (each run the median of httpDownloads), and requests/s for per-machine iPXE scripts with 200
// connections at once. Both servers run as their own processes on
// loopback; the load comes from this process, the same for both. nginx
// serves metal's scripts as static files (the same bytes): metal renders
// each one from the store per request.
func benchHTTP(cfg *config) ([]Result, error) {
	metalDir := filepath.Join(cfg.work, "http-metal")
	nginxDir := filepath.Join(cfg.work, "http-nginx")
	www := filepath.Join(nginxDir, "www")
	for _, d := range []string{filepath.Join(metalDir, "files"), filepath.Join(www, "files"), filepath.Join(www, "ipxe")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	image := filepath.Join(cfg.work, "image-1g.raw")
	if err := writeRandomFile(image, httpImageSize); err != nil {
		return nil, err
	}
	defer os.Remove(image)
	for _, d := range []string{filepath.Join(metalDir, "files"), filepath.Join(www, "files")} {
		if err := os.Link(image, filepath.Join(d, "image.raw")); err != nil {
			return nil, err
		}
	}
	// metal serve's script tokens come from this key.
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(filepath.Join(metalDir, "token.key"), key, 0o600); err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(cfg.ctx, 15*time.Minute)
	defer cancel()
	metalAddr, err := loopbackAddr()
	if err != nil {
		return nil, err
	}
	site := filepath.Join(metalDir, "site.hcl")
	if err := os.WriteFile(site, metalHTTPSite(metalDir, metalAddr), 0o644); err != nil {
		return nil, err
	}
	tftpPort, err := freePort("udp")
	if err != nil {
		return nil, err
	}
	metalBin, err := filepath.Abs(cfg.metal)
	if err != nil {
		return nil, err
	}
	// No API listener: its default port may be taken by another program
	// on this host, and nginx answers no such thing either.
	mp, err := startProc("metal serve", filepath.Join(metalDir, "metal.log"), nil, metalBin, "serve",
		"--api-listen", "", "--state-dir", metalDir, "--tftp-addr", fmt.Sprintf("127.0.0.1:%d", tftpPort), site)
	if err != nil {
		return nil, err
	}
	defer mp.stop()
	if err := waitTCP(ctx, mp, metalAddr); err != nil {
		return nil, err
	}

	// Script URLs, each with its machine's token; nginx gets the very
	// bytes metal answered as its files.
	paths := make([]string, httpMachines)
	sizes := make([]int64, httpMachines)
	for i := range paths {
		mac := httpMAC(i + 1)
		paths[i] = "/ipxe/" + mac.String() + "?token=" + pxe.Token(key, mac)
		body, err := get(ctx, "http://"+metalAddr+paths[i])
		if err != nil {
			return nil, fmt.Errorf("metal serve: %w", err)
		}
		sizes[i] = int64(len(body))
		if err := os.WriteFile(filepath.Join(www, "ipxe", mac.String()), body, 0o644); err != nil {
			return nil, err
		}
	}

	nginxAddr, err := loopbackAddr()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(nginxDir, "nginx.conf")
	if err := os.WriteFile(conf, nginxConfig(nginxDir, www, nginxAddr), 0o644); err != nil {
		return nil, err
	}
	nginx, err := lookTool("nginx")
	if err != nil {
		return nil, err
	}
	np, err := startProc("nginx", filepath.Join(nginxDir, "nginx.out"), nil, nginx, "-p", nginxDir, "-c", conf, "-g", "daemon off;")
	if err != nil {
		return nil, err
	}
	defer np.stop()
	if err := waitTCP(ctx, np, nginxAddr); err != nil {
		return nil, err
	}

	var mImg, nImg, mReq, nReq, mEff, nEff []float64
	type server struct {
		name, addr    string
		p             *proc
		img, req, eff *[]float64
	}
	servers := []server{{"metal", metalAddr, mp, &mImg, &mReq, &mEff}, {"nginx", nginxAddr, np, &nImg, &nReq, &nEff}}
	var limit []float64
	for run := range cfg.runs {
		var dl [2][]float64
		var lim []float64
		for range httpDownloads {
			for i, s := range servers {
				if err := s.p.exited(); err != nil {
					return nil, err
				}
				mib, err := download(ctx, "http://"+s.addr+"/files/image.raw", httpImageSize)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", s.name, err)
				}
				dl[i] = append(dl[i], mib)
			}
			mib, err := sendfileRate(ctx, image, httpImageSize)
			if err != nil {
				return nil, fmt.Errorf("loopback sendfile: %w", err)
			}
			lim = append(lim, mib)
		}
		limit = append(limit, statsOf(lim).Median)
		for i, s := range servers {
			if err := s.p.exited(); err != nil {
				return nil, err
			}
			mib := statsOf(dl[i]).Median
			cpu0, err := treeCPUSeconds(s.p.cmd.Process.Pid)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			rps, total, err := loadScripts("http://"+s.addr, paths, sizes, httpConcurrency, httpLoadFor)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			cpu1, err := treeCPUSeconds(s.p.cmd.Process.Pid)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			perCPU := float64(total) / max(cpu1-cpu0, 0.01)
			cfg.logger.Info("http run", "server", s.name, "run", run+1, "image_mib_s", int(mib), "scripts_per_s", int(rps),
				"scripts_per_cpu_s", int(perCPU))
			*s.img, *s.req, *s.eff = append(*s.img, mib), append(*s.req, rps), append(*s.eff, perCPU)
		}
	}
	eff := compare(fmt.Sprintf("HTTP iPXE scripts per CPU-second of the server, %d concurrent", httpConcurrency), "req/CPU-s",
		statsOf(mEff), "nginx", statsOf(nEff), 1.0)
	eff.Note = "CPU the server used (nginx: master and workers); steadier than req/s when other work shares the cores"
	if !eff.Met {
		eff.Note = "short of target; " + eff.Note
	}
	img := compare("HTTP 1 GiB image download", "MiB/s", statsOf(mImg), "nginx", statsOf(nImg), 1.0)
	img.Note = strings.TrimPrefix(img.Note+fmt.Sprintf("; each run the median of %d downloads, alternating servers", httpDownloads), "; ")
	img.Limit = &Limit{What: "loopback sendfile", Value: statsOf(limit)}
	return []Result{
		img,
		compare(fmt.Sprintf("HTTP iPXE scripts, %d concurrent", httpConcurrency), "req/s", statsOf(mReq), "nginx", statsOf(nReq), 1.0),
		eff,
	}, nil
}

// clockTicks is the unit of /proc's CPU times (USER_HZ), 100 on every
// Linux architecture Go builds metal for.
const clockTicks = 100

// treeCPUSeconds is the user and system CPU time used so far by process
// pid and its live children (nginx's workers), read from /proc.
func treeCPUSeconds(pid int) (float64, error) {
	u, err := treeUsage(pid, false)
	return u.cpu, err
}

// usage is what a server used so far, with its live children (nginx's
// workers): CPU time, and, read only when asked (switches), minor page
// faults and context switches, which a paravirtualised host makes dear.
type usage struct {
	cpu       float64 // seconds
	minflt    uint64
	vcs, nvcs uint64 // voluntary and involuntary context switches
}

func (u usage) plus(v usage) usage {
	return usage{cpu: u.cpu + v.cpu, minflt: u.minflt + v.minflt, vcs: u.vcs + v.vcs, nvcs: u.nvcs + v.nvcs}
}

func (u usage) minus(v usage) usage {
	return usage{cpu: u.cpu - v.cpu, minflt: u.minflt - v.minflt, vcs: u.vcs - v.vcs, nvcs: u.nvcs - v.nvcs}
}

// treeUsage reads the usage of process pid and its live children.
func treeUsage(pid int, switches bool) (usage, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return usage{}, err
	}
	var u usage
	var ticks uint64
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := procstat.Read(p)
		if err != nil || (p != pid && st.PPID != pid) {
			continue // gone meanwhile, or another's
		}
		ticks += st.UTime + st.STime
		u.minflt += st.MinFlt
		if switches {
			v, n, err := procstat.ContextSwitches(p)
			if err != nil {
				continue
			}
			u.vcs, u.nvcs = u.vcs+v, u.nvcs+n
		}
	}
	u.cpu = float64(ticks) / clockTicks
	return u, nil
}

// loopbackAddr is a free TCP address on 127.0.0.1.
func loopbackAddr() (string, error) {
	p, err := freePort("tcp")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", p), nil
}

func get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return body, nil
}

// download fetches url on a fresh connection, checks its length and
// returns MiB/s. It reads with a 1 MiB buffer so that the client is not
// what limits a loopback transfer.
func download(ctx context.Context, url string, want int64) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	c := &http.Client{Transport: &http.Transport{DisableCompression: true, DisableKeepAlives: true}}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	n, err := drain(resp.Body, make([]byte, 1<<20))
	if err != nil {
		return 0, fmt.Errorf("GET %s after %d bytes: %w", url, n, err)
	}
	secs := time.Since(start).Seconds()
	if n != want {
		return 0, fmt.Errorf("GET %s: %d bytes, want %d", url, n, want)
	}
	return float64(n) / (1 << 20) / secs, nil
}

// loadScripts keeps conc keep-alive connections busy GETting paths in
// turn for d (after a one-second warm-up) and returns completed requests
// per second in d, and all requests completed, warm-up included. Every
// answer must be 200 with the expected length.
func loadScripts(base string, paths []string, sizes []int64, conc int, d time.Duration) (float64, int64, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var (
		counting atomic.Bool
		done     atomic.Int64
		total    atomic.Int64
		stop     atomic.Bool
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	buf := make([][]byte, conc)
	for w := range conc {
		buf[w] = make([]byte, 4096)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; !stop.Load(); i++ {
				k := i % len(paths)
				n, err := fetch(c, base+paths[k], buf[w])
				if err == nil && n != sizes[k] {
					err = fmt.Errorf("GET %s: %d bytes, want %d", paths[k], n, sizes[k])
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					stop.Store(true)
					return
				}
				total.Add(1)
				if counting.Load() {
					done.Add(1)
				}
			}
		}()
	}
	time.Sleep(time.Second)
	counting.Store(true)
	start := time.Now()
	time.Sleep(d)
	counting.Store(false)
	elapsed := time.Since(start).Seconds()
	stop.Store(true)
	wg.Wait()
	if firstErr != nil {
		return 0, 0, firstErr
	}
	return float64(done.Load()) / elapsed, total.Load(), nil
}

// fetch GETs url, reading the body into buf, and returns its length.
func fetch(c *http.Client, url string, buf []byte) (int64, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := drain(resp.Body, buf)
	if err != nil {
		return n, err
	}
	if resp.StatusCode != http.StatusOK {
		return n, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return n, nil
}

// drain reads r to its end through buf, counting bytes. Unlike io.Copy to
// io.Discard it reads with the caller's buffer size, so that a large
// download is not held to 8 KiB reads by the client.
func drain(r io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		k, err := r.Read(buf)
		n += int64(k)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// sendfileRate is the limit of an HTTP download on this machine: the file
// sent with sendfile(2) over a loopback TCP connection, with no HTTP at
// all, to the same reader as download's (1 MiB reads). MiB/s. The sender
// tries both send buffers a server may have, the kernel's autotuned one
// and the largest net.core.wmem_max allows, and the faster counts: with
// the autotuned one alone, nginx beat this "limit" on a host where a
// large buffer is allowed.
func sendfileRate(ctx context.Context, path string, want int64) (float64, error) {
	var best float64
	for _, sndbuf := range []int{0, 1 << 30} {
		mib, err := sendfileOnce(ctx, path, want, sndbuf)
		if err != nil {
			return 0, err
		}
		best = max(best, mib)
	}
	return best, nil
}

// sendfileOnce is one sendfileRate transfer; sndbuf > 0 sets the
// sender's SO_SNDBUF (which the kernel caps at wmem_max).
func sendfileOnce(ctx context.Context, path string, want int64, sndbuf int) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	sent := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			sent <- err
			return
		}
		defer c.Close()
		if sndbuf > 0 {
			if err := c.(*net.TCPConn).SetWriteBuffer(sndbuf); err != nil {
				sent <- err
				return
			}
		}
		f, err := os.Open(path)
		if err != nil {
			sent <- err
			return
		}
		defer f.Close()
		// TCPConn.ReadFrom of an *os.File is sendfile.
		_, err = c.(*net.TCPConn).ReadFrom(f)
		sent <- err
	}()
	var d net.Dialer
	start := time.Now()
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	n, err := drain(c, make([]byte, 1<<20))
	secs := time.Since(start).Seconds()
	if err := errors.Join(err, <-sent); err != nil {
		return 0, err
	}
	if n != want {
		return 0, fmt.Errorf("%d bytes, want %d", n, want)
	}
	return float64(n) / (1 << 20) / secs, nil
}
