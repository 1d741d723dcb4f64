package tftp

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestManyTransfersAtOnce: many real clients fetch at once, lockstep and
// windowed, beside clients that stop acknowledging, as a rack booting
// does. Every file arrives whole, each silent client's transfer ends by
// its timeout without slowing the others, and once the server has
// stopped no socket of a transfer is left open.
func TestManyTransfersAtOnce(t *testing.T) {
	for _, c := range clients {
		needTool(t, c.tool, c.pkg)
	}
	fdsBefore := openFDs(t)
	// Registered before the server starts, so it runs after it stopped.
	t.Cleanup(func() {
		if n := openFDs(t); n > fdsBefore {
			t.Errorf("%d descriptors open after the server stopped, %d before it started", n, fdsBefore)
		}
	})
	// A timeout long enough that a loaded machine's clients (atftp
	// aborts on an OACK sent again) see no retransmission.
	ts := startServer(t, func(c *Config) { c.Timeout = time.Second; c.Retries = 1 })
	data := patterned(200*1024 + 77)
	mustT(t, os.WriteFile(filepath.Join(ts.root, "image"), data, 0o644))
	mustT(t, os.WriteFile(filepath.Join(ts.root, "silent"), data, 0o644))

	// Clients that take the first block and go silent, in flight while
	// the others fetch.
	const silent = 4
	for range silent {
		c := newRawClient(t)
		c.start(ts.addr, "silent", 4)
		c.recv()
	}

	tests := map[string]struct {
		client string
		n      int
	}{
		"curl lockstep":    {client: "curl", n: 24},
		"atftp lockstep":   {client: "atftp", n: 12},
		"atftp windowsize": {client: "atftp windowsize", n: 12},
		"tftp-hpa":         {client: "tftp-hpa", n: 8},
	}
	dir := t.TempDir()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	for name, tc := range tests {
		for i := range tc.n {
			local := filepath.Join(dir, fmt.Sprintf("%s-%d", strings.ReplaceAll(name, " ", "-"), i))
			cmd := clients[tc.client].get(ts.addr, "image", local)
			wg.Add(1)
			go func() {
				defer wg.Done()
				fail := func(format string, args ...any) {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s #%d: ", name, i)+fmt.Sprintf(format, args...))
					mu.Unlock()
				}
				if out, err := runWithin(cmd, time.Minute); err != nil {
					fail("%v: %s", err, out)
					return
				}
				got, err := os.ReadFile(local)
				if err != nil {
					fail("%v", err)
					return
				}
				if !bytes.Equal(got, data) {
					fail("got %d bytes, not the file's %d", len(got), len(data))
				}
			}()
		}
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ok, timedOut int
		for _, rec := range ts.logs.records("tftp transfer") {
			switch {
			case rec["file"] == "image" && rec["result"] == "ok":
				ok++
			case rec["file"] == "silent" && rec["result"] == "failed" && strings.Contains(fmt.Sprint(rec["reason"]), "timed out"):
				timedOut++
			}
		}
		if ok == 56 && timedOut == silent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d transfers logged ok (want 56), %d silent ones timed out (want %d)", ok, timedOut, silent)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runWithin runs cmd, killing it after d.
func runWithin(cmd *exec.Cmd, d time.Duration) ([]byte, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	timer := time.AfterFunc(d, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	return out.Bytes(), err
}

// openFDs counts the test process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	mustT(t, err)
	return len(ents)
}
