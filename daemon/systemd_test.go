package daemon_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/site"
)

// TestSupervise runs a daemon as systemd would (NOTIFY_SOCKET): READY=1
// comes once the HTTP listener answers, SIGHUP reloads the edited site
// file between RELOADING=1 and READY=1, a reload that needs a restart is
// refused and the old site kept, and the end says STOPPING=1.
func TestSupervise(t *testing.T) {
	dir := t.TempDir()
	notifyPath := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", notifyPath)
	msgs := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(want string) string {
		t.Helper()
		select {
		case m := <-msgs:
			if !strings.HasPrefix(m, want) {
				t.Fatalf("systemd was told %q, want %s first", m, want)
			}
			return m
		case <-time.After(20 * time.Second):
			t.Fatalf("systemd was never told %s", want)
		}
		return ""
	}

	src := func(machine string) string {
		return `site "s" {
  state = "file://state/state.db"
}
network "lan" {
  subnet = "192.0.2.0/24"
  mode   = "off"
}
machine "` + machine + `" {
  mac     = "02:00:00:00:00:01"
  network = "lan"
}
`
	}
	siteFile := filepath.Join(dir, "site.hcl")
	s := loadSite(t, dir, src("m"))
	reload := func(context.Context) (*site.Site, string, error) {
		b, err := os.ReadFile(siteFile)
		if err != nil {
			return nil, "", err
		}
		res, diags := site.LoadFile(siteFile, site.Options{})
		if diags.HasErrors() {
			return nil, "", diags
		}
		return res.Site, string(b), nil
	}
	listen := freeAddr(t)
	d, err := daemon.New(t.Context(), daemon.Options{Site: s, SiteDir: dir, Listen: listen, TFTPAddr: "127.0.0.1:0",
		PowerPoll: -1, Agent: daemon.AgentOptions{Disabled: true}, SiteFile: siteFile, SiteDigest: src("m"), Reload: reload})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	supervised := make(chan struct{})
	go func() { served <- d.Serve(ctx) }()
	go func() { d.Supervise(ctx); close(supervised) }()

	next("READY=1")
	if c, err := net.DialTimeout("tcp", listen, time.Second); err != nil {
		t.Fatalf("READY=1 before the HTTP listener is up: %v", err)
	} else {
		c.Close()
	}

	// An edit the running servers can take: a machine renamed.
	if err := os.WriteFile(siteFile, []byte(src("m2")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	next("RELOADING=1")
	next("READY=1\nSTATUS=serving")
	if got := d.Site().Machines[0].Name; got != "m2" {
		t.Errorf("after the reload the daemon serves machine %q, want m2", got)
	}

	// One that needs a restart: refused, the site kept.
	if err := os.WriteFile(siteFile, []byte(strings.Replace(src("m2"), `site "s"`, `site "t"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	next("RELOADING=1")
	if m := next("READY=1"); !strings.Contains(m, "reload refused") {
		t.Errorf("a refused reload told systemd %q, want a STATUS saying it was refused", m)
	}
	if got := d.Site().Name; got != "s" {
		t.Errorf("after a refused reload the daemon serves site %q, want s", got)
	}

	stop()
	<-supervised
	next("STOPPING=1")
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
}
