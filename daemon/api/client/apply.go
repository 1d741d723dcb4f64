package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/converge/runner"
	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// Running returns the local socket (daemon.LocalSocket) of a metal serve
// whose state directory is dir, if one answers there: a socket that
// refuses connections was left by a daemon that died.
func Running(dir string) (sock string, ok bool) {
	sock = filepath.Join(dir, daemon.LocalSocket)
	if _, err := os.Stat(sock); err != nil {
		return "", false
	}
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return "", false
	}
	c.Close()
	return sock, true
}

// Beside returns a client of the metal serve that holds the embedded
// store at stateURL (file://PATH): its socket is beside the store's file.
// False when stateURL is no file store or no socket is there.
func Beside(stateURL string) (*Client, bool) {
	path, ok := strings.CutPrefix(stateURL, "file://")
	if !ok {
		return nil, false
	}
	sock := filepath.Join(filepath.Dir(path), daemon.LocalSocket)
	if _, err := os.Stat(sock); err != nil {
		return nil, false
	}
	return New(sock), true
}

// SubmitView is what a caller shows of a run it submits: runner.View's
// Plan and Approve, and the progress the daemon's stream is replayed into.
type SubmitView interface {
	Plan(p *plan.Plan) (proceed bool, err error)
	Approve() error
	Progress() Progress
}

// Submit carries out req in the daemon as runner.Run does in-process: it
// plans s against what the daemon's store holds (unless resuming), the
// hardware settings as hardware's BMCs report them, as the daemon plans
// the run again (runner.Plan), for v to show; asks v to approve; submits
// the run with the plan's digest (the daemon refuses it if its own plan
// differs); and replays its progress into v until it ends. A run v found
// nothing to do in returns a done Result, and nil.
func (r *Client) Submit(ctx context.Context, s *site.Site, hardware apply.BMCFunc, req daemon.ApplyRequest, v SubmitView) (apply.Result, error) {
	if !req.Resume {
		machines, err := r.Machines(ctx)
		if err != nil {
			return apply.Result{}, err
		}
		p, err := runner.Plan(ctx, s, machines, hardware, req.Targets)
		if err != nil {
			return apply.Result{}, err
		}
		proceed, err := v.Plan(p)
		if !proceed || err != nil {
			return apply.Result{State: inventory.RunDone}, err
		}
		req.PlanDigest = p.Digest
	}
	if err := v.Approve(); err != nil {
		return apply.Result{}, err
	}
	result, err := r.Apply(req, v.Progress())
	switch {
	case result != nil:
		return *result, err
	case err == nil:
		err = errors.New("metal serve stopped before the run ended (`metal events` shows how far it got; `metal apply --resume` continues it once metal serve runs again)")
	}
	return apply.Result{}, err
}

// Progress is what a submitted run's events are replayed into: the
// engine's hook calls, and the lines that are none (notices, the error
// that ended the run).
type Progress interface {
	apply.Hook
	Emit(e apply.Event, line string)
}

// Apply submits req to the daemon (daemon.LocalApplyPath) and replays the
// run's progress into p until the run ends. A nil result with a nil error:
// the stream ended before the run did.
func (r *Client) Apply(req daemon.ApplyRequest, p Progress) (*apply.Result, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	resp, err := r.client.Post("http://metal"+daemon.LocalApplyPath, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("submit the apply to metal serve: %w", err)
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
		return nil, errors.New(e.Error)
	}
	return follow(resp.Body, p)
}

// StopApply drains the submitted run (no machine starts any more), or
// with abandon, abandons the machines in flight where they are.
func (r *Client) StopApply(abandon bool) error {
	path := daemon.LocalDrainPath
	if abandon {
		path = daemon.LocalAbandonPath
	}
	resp, err := r.client.Post("http://metal"+path, "application/json", nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// follow replays a submitted run's event stream into p until the run
// finishes, fails, or the stream ends.
func follow(rd io.Reader, p Progress) (*apply.Result, error) {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64*1024), 64<<20)
	var result *apply.Result
	for sc.Scan() {
		var e apply.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return result, fmt.Errorf("metal serve sent a progress line this metal apply cannot read (are both the same version?): %w", err)
		}
		switch e.Type {
		case apply.EventNotice:
			p.Emit(e, e.Note)
		case apply.EventError:
			p.Emit(e, "Error: "+e.Error)
			return result, errors.New(e.Error)
		default:
			if _, err := e.Replay(p); err != nil {
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
