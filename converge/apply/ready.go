package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// readiness is what an install of image im waits for once the disk is
// written: the check, and for cloud-init the phone-home URL with a fresh
// secret (only its hash is stored).
// also are the same URL at the site's other metal serves (ReadyAlso).
func (m *machineRun) readiness(im *site.Image, taskID string) (r *inventory.Readiness, url string, also []string, err error) {
	r = &inventory.Readiness{TaskID: taskID, Check: im.Ready.String()}
	if im.Ready.Kind != site.ReadyCloudInit && im.Ready.Kind != "" {
		return r, "", nil, nil
	}
	secret := randomHex(16)
	if m.r.opts.ReadyURL != nil {
		url = m.reachable(m.r.opts.ReadyURL(m.decl.MAC.String(), secret))
	}
	if m.r.opts.ReadyAlso != nil {
		also = m.r.opts.ReadyAlso(m.decl.MAC.String(), secret)
	}
	if url == "" {
		return nil, "", nil, fmt.Errorf("image %q is checked by cloud-init's phone-home, but metal has no URL for it to post to; declare ready = \"tcp:PORT\" or \"none\" on the image", im.Name)
	}
	sum := sha256.Sum256([]byte(secret))
	r.SecretSHA256 = hex.EncodeToString(sum[:])
	return r, url, also, nil
}

// waitReady waits, up to the image's ready_timeout, until the installed OS
// reports in (cloud-init's phone-home, recorded by the agent protocol) or
// answers the image's probe. A machine that does not come up fails with
// the cause, what metal last saw of it and its console's last lines.
//
// A resumed run waits again for its full ready_timeout: while no metal
// ran, nothing listened for the phone-home or probed.
//
// A machine whose agent reboots it in this run and then shows no sign of
// its installed OS within BootTimeout fails early (rebootTimer,
// checkRebooted).
func (m *machineRun) waitReady(ctx context.Context, im *site.Image, watchReboot bool) error {
	check := im.Ready
	if check.Kind == "" {
		check.Kind = site.ReadyCloudInit
	}
	timeout := im.ReadyTimeout
	if timeout <= 0 {
		timeout = site.DefaultReadyTimeout
	}
	if check.Kind == site.ReadyNone {
		m.r.opts.Hook.MachineStep(m.name, StepReady, `not checked (ready = "none")`)
		return nil
	}
	m.recordStep(ctx, StepReady, fmt.Sprintf("waiting up to %s for the installed OS (%s)", timeout, check))
	sub := m.r.watch.subscribe(m.name)
	defer m.r.watch.unsubscribe(m.name, sub)
	started := m.r.opts.Clock.Now()
	deadline := m.r.opts.Clock.After(timeout)
	poll := m.r.opts.PollInterval
	if check.Kind != site.ReadyCloudInit {
		poll = min(poll, 2*time.Second)
	}
	var stall <-chan time.Time
	if watchReboot {
		stall = m.rebootTimer()
	}
	var (
		lastProbe error
		taskID    string
	)
	for {
		rec, err := m.r.store.Machine(ctx, m.name)
		if err == nil {
			if rec.Ready == nil {
				return errors.New("the machine's readiness record is gone (someone changed the machine meanwhile)")
			}
			taskID = rec.Ready.TaskID
			if !rec.Ready.ReadyAt.IsZero() {
				m.r.opts.Hook.MachineStep(m.name, StepReady, "the installed OS reported in from "+rec.Ready.From)
				return nil
			}
			if check.Kind == site.ReadyCloudInit && m.seedSkipped(ctx) {
				return fmt.Errorf("the image has no cloud-init (the install agent found no /etc/cloud to seed), so it cannot phone home: declare ready = \"tcp:PORT\", an HTTP URL, or \"none\" on image %q", im.Name)
			}
		}
		if check.Kind == site.ReadyTCP || check.Kind == site.ReadyHTTP {
			if lastProbe = m.probe(ctx, check); lastProbe == nil {
				return m.markReady(ctx, m.decl.IP.String())
			}
		}
		select {
		case <-sub:
		case <-m.r.opts.Clock.After(poll):
		case <-stall:
			stall = nil
			if err := m.checkRebooted(ctx, taskID); err != nil {
				return err
			}
		case <-deadline:
			return m.notReady(ctx, check, timeout, started, lastProbe)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// probe checks the machine's address once.
func (m *machineRun) probe(ctx context.Context, check site.Readiness) error {
	addr := netip.AddrPortFrom(m.decl.IP, uint16(check.Port)).String()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if check.Kind == site.ReadyTCP {
		c, err := (&net.Dialer{}).DialContext(pctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(pctx, http.MethodGet, check.Scheme+"://"+addr+check.Path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s answered %s", req.URL, resp.Status)
	}
	return nil
}

// markReady records that the probe answered.
func (m *machineRun) markReady(ctx context.Context, from string) error {
	now := m.r.opts.Clock.Now().UTC()
	if _, err := inventory.UpdateMachine(ctx, m.r.store, m.name, func(rec *inventory.Machine) error {
		if rec.Ready == nil {
			return errors.New("the machine's readiness record is gone")
		}
		rec.Ready.ReadyAt, rec.Ready.From = now, from
		return nil
	}); err != nil {
		return err
	}
	m.event(ctx, "installed OS ready: "+from+" answered")
	m.r.opts.Hook.MachineStep(m.name, StepReady, "the installed OS answered at "+from)
	return nil
}

// seedSkipped reports whether the agent of the machine's install said it
// wrote no cloud-init seed (an image without cloud-init).
func (m *machineRun) seedSkipped(ctx context.Context) bool {
	rec, err := m.r.store.Machine(ctx, m.name)
	if err != nil || rec.Ready == nil {
		return false
	}
	evs, err := m.r.store.Events(ctx, inventory.EventQuery{Machine: m.name})
	if err != nil {
		return false
	}
	return eventsSay(evs, "agent task "+rec.Ready.TaskID+": running (seed-skipped)")
}

func eventsSay(evs []inventory.Event, msg string) bool {
	for _, ev := range evs {
		if ev.Message == msg {
			return true
		}
	}
	return false
}

// notReady is the failure of a machine whose OS did not come up: the
// check, what metal saw of the machine last, and its console's tail.
func (m *machineRun) notReady(ctx context.Context, check site.Readiness, timeout time.Duration, started time.Time, probe error) error {
	var b strings.Builder
	switch check.Kind {
	case site.ReadyCloudInit:
		fmt.Fprintf(&b, "the installed OS did not phone home within %s (cloud-init's phone_home, from metal's NoCloud seed)", timeout)
	default:
		fmt.Fprintf(&b, "the installed OS did not answer %s at %s within %s", check, m.decl.IP, timeout)
		if probe != nil {
			fmt.Fprintf(&b, " (last probe: %v)", probe)
		}
	}
	if evs, err := m.r.store.Events(ctx, inventory.EventQuery{Machine: m.name}); err == nil && len(evs) > 0 {
		ev := evs[len(evs)-1]
		fmt.Fprintf(&b, "; last seen %s: %s", ev.Time.UTC().Format(time.RFC3339), ev.Message)
		if ev.Time.Before(started) {
			b.WriteString(" (nothing since the next boot was set to its disk)")
		}
	}
	if m.r.opts.ConsoleLog != nil {
		if p := m.r.opts.ConsoleLog(m.name); p != "" {
			if tail := cleanConsole(fileTail(p, 4<<10)); tail != "" {
				fmt.Fprintf(&b, "; console (%s): %s", p, tail)
			}
		}
	}
	return errors.New(b.String())
}

// fileTail returns the last n bytes of the file at path, or "".
func fileTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		if _, err := f.Seek(fi.Size()-n, io.SeekStart); err != nil {
			return ""
		}
	}
	b, _ := io.ReadAll(io.LimitReader(f, n))
	return string(b)
}

// cleanConsole keeps the printable text of the last few console lines,
// joined with " | ", at most 600 bytes.
func cleanConsole(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.Map(func(r rune) rune {
			if unicode.IsPrint(r) {
				return r
			}
			return -1
		}, l)
		// Terminal escapes leave their tails ("[2J", "[0m") behind.
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	out := strings.Join(lines, " | ")
	if len(out) > 600 {
		out = "…" + out[len(out)-600:]
	}
	return out
}
