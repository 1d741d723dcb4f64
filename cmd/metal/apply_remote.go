package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/metal-dev/metal/inventory"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/daemon"
	apiclient "github.com/metal-dev/metal/daemon/api/client"
	"github.com/metal-dev/metal/site"
)

// runningDaemon returns the local socket of a `metal serve` running for
// the site (daemon.LocalSocket in its state directory), if one answers.
func runningDaemon(s *site.Site, siteDir, stateDir string) (string, bool) {
	if stateDir == "" {
		stateDir = site.DefaultStateDir(s.Settings.State, siteDir)
	}
	sock := filepath.Join(stateDir, daemon.LocalSocket)
	if _, err := os.Stat(sock); err != nil {
		return "", false
	}
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return "", false // a socket left by a daemon that died
	}
	c.Close()
	return sock, true
}

// runSubmitted is `metal apply` beside a running `metal serve`: the plan
// is computed here from what the daemon's store holds and confirmed here;
// the run is carried out by the daemon, which serves the netboot the
// machines need, and its progress streams back into the same view an
// in-process apply shows. Ctrl-C drains and abandons the run in the
// daemon as it would in-process; if this process goes away, the daemon
// drains the run (it does not abandon machines mid-install).
func runSubmitted(ctx context.Context, a *app, f *applyFlags, sock string, res *site.Result, sitePath string, saved *plan.Plan) error {
	for _, fl := range []struct {
		name string
		set  bool
	}{{"listen", f.listen != ""}, {"tftp-addr", f.tftpAddr != ":69"}, {"agent-kernel", f.agent.kernel != ""}} {
		if fl.set {
			return usageError("--%s is for an apply that runs its own servers, but a metal serve runs for this site (%s) and the apply runs there; drop the flag, or stop metal serve", fl.name, sock)
		}
	}
	fmt.Fprintf(a.stderr, "metal serve is running for this site (%s): the apply runs there.\n", sock)
	client := apiclient.HTTP(sock)
	color := !f.noColor && isTerminal(a.stdout) && os.Getenv("NO_COLOR") == ""

	abs, err := filepath.Abs(sitePath)
	if err != nil {
		return &exitError{code: exitFailed, err: err}
	}
	req := daemon.ApplyRequest{
		SiteFile: abs, SiteDigest: res.Digest(), Targets: f.targets, Resume: f.resume,
		AllowDestroy: f.allowDestroy, Wipe: inventory.WipeMethod(f.wipe), StepTimeout: f.stepTimeout, AgentTimeout: f.agentTimeout,
		BootTimeout: f.bootTimeout, ConsoleLog: f.consoleLog,
	}
	if saved != nil {
		req.Targets = saved.Targets
	}
	if !f.resume {
		machines, err := apiclient.New(sock).Machines(ctx)
		if err != nil {
			return &exitError{code: exitFailed, err: err}
		}
		p, err := plan.Compute(res.Site, apply.ObservedFrom(machines, res.Site)).Only(req.Targets)
		if err != nil {
			return &exitError{code: exitFailed, err: err}
		}
		if p, err = showPlan(a, f, p, saved, sitePath, color); p == nil || err != nil {
			return err
		}
		req.PlanDigest = p.Digest
	}
	if err := confirmApply(a, f, saved); err != nil {
		return err
	}

	post := func(path string) {
		r, err := client.Post("http://metal"+path, "application/json", nil)
		if err != nil {
			fmt.Fprintf(a.stderr, "could not tell metal serve to stop the run: %v\n", err)
			return
		}
		r.Body.Close()
	}
	stop := onInterrupt(a, func() { post(daemon.LocalDrainPath) }, func() { post(daemon.LocalAbandonPath) })
	defer stop()

	body, err := json.Marshal(req)
	if err != nil {
		return &exitError{code: exitFailed, err: err}
	}
	resp, err := client.Post("http://metal"+daemon.LocalApplyPath, "application/json", bytes.NewReader(body))
	if err != nil {
		return &exitError{code: exitFailed, err: fmt.Errorf("submit the apply to metal serve: %w", err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return &exitError{code: exitFailed, err: errors.New(e.Error)}
	}

	progress := view.NewApply(a.stdout, f.asJSON, isTerminal(a.stdout), color)
	result, runErr := followRun(resp.Body, progress)
	progress.Close()
	if result == nil && runErr == nil {
		runErr = errors.New("metal serve stopped before the run ended (`metal events` shows how far it got; `metal apply --resume` continues it once metal serve runs again)")
	}
	if result == nil {
		result = &apply.Result{}
	}
	return applyResult(*result, runErr)
}

// followRun replays a submitted run's event stream into progress until the run
// finishes, fails, or the stream ends.
func followRun(r io.Reader, progress *view.Apply) (*apply.Result, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 64<<20)
	var result *apply.Result
	for sc.Scan() {
		var e apply.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return result, fmt.Errorf("metal serve sent a progress line this metal apply cannot read (are both the same version?): %w", err)
		}
		switch e.Type {
		case apply.EventNotice:
			progress.Emit(e, e.Note)
		case apply.EventError:
			progress.Emit(e, "Error: "+e.Error)
			return result, errors.New(e.Error)
		default:
			if _, err := e.Replay(progress); err != nil {
				return result, fmt.Errorf("metal serve: %w", err)
			}
			if e.Type == "finished" {
				result = e.Result
			}
		}
	}
	if err := sc.Err(); err != nil && result == nil {
		return nil, fmt.Errorf("lost metal serve during the run: %w (it goes on there: `metal events --follow` shows it)", err)
	}
	return result, nil
}
