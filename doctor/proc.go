package doctor

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// process is a running process found through /proc.
type process struct {
	pid  int
	argv []string
	cwd  string
}

func (p process) String() string {
	name := "a process"
	if len(p.argv) > 0 {
		name = filepath.Base(p.argv[0])
	}
	if p.isMetalServe() {
		name = "metal serve"
	}
	return fmt.Sprintf("%s (PID %d)", name, p.pid)
}

// isMetalServe reports whether the process is `metal serve`.
func (p process) isMetalServe() bool {
	if len(p.argv) < 2 || !strings.HasPrefix(filepath.Base(p.argv[0]), "metal") {
		return false
	}
	for _, a := range p.argv[1:] {
		if a == "serve" {
			return true
		}
	}
	return false
}

// servesSite reports whether the process is `metal serve` of the site
// self names: one of its arguments is the same file.
func (p process) servesSite(self selfRef) bool {
	if !p.isMetalServe() {
		return false
	}
	for _, a := range p.argv[1:] {
		if !strings.HasPrefix(a, "-") && self.isSite(p.cwd, a) {
			return true
		}
	}
	return false
}

func readProcess(pid int) process {
	p := process{pid: pid}
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		for _, a := range bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0}) {
			p.argv = append(p.argv, string(a))
		}
	}
	p.cwd, _ = os.Readlink(filepath.Join(dir, "cwd"))
	return p
}

// socketHolders returns the processes holding a socket on local port of
// proto ("udp" or "tcp"; TCP sockets only when listening) in this
// network namespace. Without root, other users' processes are not found.
func socketHolders(proto string, port int) []process {
	inodes := map[string]bool{}
	for _, f := range []string{proto, proto + "6"} {
		for _, ino := range socketInodes("/proc/thread-self/net/"+f, port, proto == "tcp") {
			inodes["socket:["+ino+"]"] = true
		}
	}
	if len(inodes) == 0 {
		return nil
	}
	return processesWith(func(link string) bool { return inodes[link] })
}

// socketInodes reads a /proc/net/{tcp,udp}[6] table and returns the inodes
// of sockets bound to local port.
func socketInodes(table string, port int, listenOnly bool) []string {
	f, err := os.Open(table)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		_, hexPort, ok := strings.Cut(fields[1], ":")
		if !ok {
			continue
		}
		pt, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil || int(pt) != port {
			continue
		}
		if listenOnly && fields[3] != "0A" { // TCP_LISTEN
			continue
		}
		out = append(out, fields[9])
	}
	return out
}

// processesWith returns the processes having an open file descriptor whose
// link text satisfies match ("socket:[123]", "/var/lib/metal/state.db").
func processesWith(match func(link string) bool) []process {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []process
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fdDir := filepath.Join("/proc", e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err == nil && match(link) {
				out = append(out, readProcess(pid))
				break
			}
		}
	}
	return out
}
