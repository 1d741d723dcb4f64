package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/inventory"
)

// machineRow is one line of the machines table.
type machineRow struct {
	M    inventory.Machine
	Rack string
	Last *inventory.Event
}

type machinesView struct {
	Filter api.Filter
	Query  string // q as typed
	States []inventory.State
	Rows   []machineRow
	Total  int
	Stream string
}

var allStates = []inventory.State{
	inventory.StateUnknown, inventory.StateDiscovered, inventory.StateReady, inventory.StateProvisioning,
	inventory.StateProvisioned, inventory.StateFailed, inventory.StateDeprovisioning,
}

func (c *console) machinesView(ctx context.Context, q url.Values) (machinesView, error) {
	f, err := api.ParseFilter(q)
	if err != nil {
		return machinesView{}, badRequest{err}
	}
	ms, _, err := c.opts.Store.Machines(ctx)
	if err != nil {
		return machinesView{}, err
	}
	last, err := c.last.update(ctx, c.opts.Store)
	if err != nil {
		return machinesView{}, err
	}
	v := machinesView{Filter: f, Query: q.Get("q"), States: allStates, Total: len(ms)}
	for _, m := range ms {
		if !f.Match(m) {
			continue
		}
		v.Rows = append(v.Rows, machineRow{M: m, Rack: api.Rack(m), Last: last(m)})
	}
	sq := url.Values{"view": {"machines"}}
	for _, k := range []string{"q", "state", "label"} {
		if vals := q[k]; len(vals) > 0 {
			sq[k] = vals
		}
	}
	v.Stream = Prefix + "stream?" + sq.Encode()
	return v, nil
}

func (c *console) machinesPage(w http.ResponseWriter, r *http.Request) {
	v, err := c.machinesView(r.Context(), r.URL.Query())
	if err != nil {
		var br badRequest
		if errors.As(err, &br) {
			c.fail(w, r, http.StatusBadRequest, err.Error())
			return
		}
		c.storeFail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "machines.html", "Machines", "machines", v)
}

// badRequest marks the operator's mistakes apart from the store's.
type badRequest struct{ error }

type machineView struct {
	M         inventory.Machine
	Rack      string
	Events    []inventory.Event
	Waterfall *waterfall
	Histogram *histogram
	Actions   bool
	Serial    bool
	Stream    string
}

// timelineLen is how many of a machine's latest events its page shows;
// bootEvents how many its boot waterfall looks back through for the
// start of the last provision.
const (
	timelineLen = 50
	bootEvents  = 1000
)

func (c *console) machineView(ctx context.Context, name string) (machineView, error) {
	m, err := c.opts.Store.Machine(ctx, name)
	if err != nil {
		return machineView{}, err
	}
	evs, err := latestEvents(ctx, c.opts.Store, inventory.EventQuery{Machine: m.Name, MAC: m.MAC}, bootEvents)
	if err != nil {
		return machineView{}, err
	}
	wf := newWaterfall(evs, c.opts.Now())
	fleet, _, err := c.opts.Store.Machines(ctx)
	if err != nil {
		return machineView{}, err
	}
	evs = evs[max(0, len(evs)-timelineLen):]
	// Newest first: the timeline reads from what just happened.
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	return machineView{
		M: api.Redact(m), Rack: api.Rack(m), Events: evs, Actions: c.opts.Actions != nil,
		Waterfall: wf, Histogram: newHistogram(fleet, m.Name), Serial: c.opts.Serial != nil,
		Stream: Prefix + "stream?" + url.Values{"view": {"machine"}, "name": {m.Name}}.Encode(),
	}, nil
}

func (c *console) machinePage(w http.ResponseWriter, r *http.Request) {
	v, err := c.machineView(r.Context(), r.PathValue("name"))
	if err != nil {
		c.storeFail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "machine.html", v.M.Name, "machines", v)
}

type rolloutView struct {
	Runs    []inventory.ApplyRun // newest first, without steps
	Run     *api.Run
	Batches []api.Batch
	Picture *picture
	Actions bool
	Stream  string
}

func (c *console) rolloutView(ctx context.Context, id string) (rolloutView, error) {
	runs, err := c.opts.Store.ApplyRuns(ctx)
	if err != nil {
		return rolloutView{}, err
	}
	v := rolloutView{Actions: c.opts.Actions != nil}
	for i := len(runs) - 1; i >= 0; i-- {
		r := runs[i]
		if (id == "" && v.Run == nil) || r.ID == id {
			run := api.NewRun(r)
			v.Run = &run
			v.Batches = run.Batches()
			v.Picture = newPicture(run, v.Batches, c.opts.Now())
		}
		r.Steps = nil
		v.Runs = append(v.Runs, r)
	}
	if id != "" && v.Run == nil {
		return v, fmt.Errorf("apply run %s: %w", id, inventory.ErrNotFound)
	}
	sq := url.Values{"view": {"rollout"}}
	if id != "" {
		sq.Set("run", id)
	}
	v.Stream = Prefix + "stream?" + sq.Encode()
	return v, nil
}

func (c *console) rolloutPage(w http.ResponseWriter, r *http.Request) {
	v, err := c.rolloutView(r.Context(), r.PathValue("id"))
	if err != nil {
		c.storeFail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "rollout.html", "Rollout", "rollout", v)
}

type planView struct {
	Plan *plan.Plan
	Err  string
	// Discovered are the machines metal found that the site does not
	// declare, each with an adopt view.
	Discovered []inventory.Machine
}

func (c *console) planPage(w http.ResponseWriter, r *http.Request) {
	var v planView
	if c.opts.Planner == nil {
		v.Err = "No site is loaded, so there is no plan. Start the daemon with a site file: metal serve site.hcl"
	} else if p, err := c.opts.Planner.Plan(r.Context()); err != nil {
		v.Err = "The plan could not be computed: " + err.Error()
	} else {
		v.Plan = p
	}
	ms, _, err := c.opts.Store.Machines(r.Context())
	if err != nil {
		c.storeFail(w, r, err)
		return
	}
	for _, m := range ms {
		if m.State == inventory.StateDiscovered {
			v.Discovered = append(v.Discovered, m)
		}
	}
	c.render(w, r, http.StatusOK, "plan.html", "Plan", "plan", v)
}

type loginView struct {
	Next  string
	Error string
}

func (c *console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "login.html", "Log in", "login", loginView{Next: safeNext(r.URL.Query().Get("next"))})
}

func (c *console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		c.fail(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	secret := strings.TrimSpace(r.PostForm.Get("token"))
	err := api.ErrTokenInvalid
	var id api.Identity
	if c.opts.Tokens != nil {
		id, err = c.opts.Tokens.Verify(r.Context(), secret)
	}
	if err != nil {
		c.log.Warn("console login refused", "client", r.RemoteAddr, "err", err)
		msg := "That token is not valid. Paste an API token (metal token create --role read makes one)."
		if errors.Is(err, api.ErrTokenExpired) {
			msg = "That token has expired. Ask for a new one (metal token create)."
		}
		c.render(w, r, http.StatusUnauthorized, "login.html", "Log in", "login", loginView{Next: next, Error: msg})
		return
	}
	name := id.Name
	s := c.sessions.create(id, secret)
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: s.id, Path: Prefix, HttpOnly: true, Secure: c.opts.SecureCookie,
		SameSite: http.SameSiteStrictMode, MaxAge: int(c.opts.SessionTTL.Seconds()),
	})
	c.log.Info("console login", "token", name, "client", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *console) logout(w http.ResponseWriter, r *http.Request) {
	if s := c.session(r); s != nil {
		r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
		if r.ParseForm() == nil && s.validCSRF(r.PostForm.Get("csrf")) {
			c.sessions.remove(s.id)
		}
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: Prefix, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

type confirmView struct {
	Req   api.ActionRequest
	Verb  string
	Back  string
	Login string
}

var verbs = map[string]string{
	api.ActionPowerCycle:  "Power cycle",
	api.ActionReprovision: "Reprovision",
	api.ActionHalt:        "Halt",
}

// confirmPage asks before acting; without a login it says to log in.
func (c *console) confirmPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := api.ActionRequest{Action: q.Get("action"), Machine: q.Get("machine"), Run: q.Get("run")}
	if err := req.Validate(); err != nil {
		c.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	v := confirmView{Req: req, Verb: verbs[req.Action], Back: backTo(req)}
	if c.session(r) == nil {
		v.Login = Prefix + "login?next=" + url.QueryEscape(r.URL.RequestURI())
	}
	c.render(w, r, http.StatusOK, "confirm.html", v.Verb+"?", "", v)
}

func backTo(req api.ActionRequest) string {
	if req.Machine != "" {
		return Prefix + "machines/" + url.PathEscape(req.Machine)
	}
	return Prefix + "rollout/" + url.PathEscape(req.Run)
}

// action carries out a confirmed action: it needs a session and the
// session's form token.
func (c *console) action(w http.ResponseWriter, r *http.Request) {
	s := c.session(r)
	if s == nil {
		c.fail(w, r, http.StatusForbidden, "Actions need a login: log in with an API token, then try again.")
		return
	}
	if !s.CanOperate() {
		c.log.Warn("console action refused: the token lacks the role", "token", s.who, "role", s.role, "need", api.RoleOperate)
		c.fail(w, r, http.StatusForbidden, fmt.Sprintf("Token %q has role %s; actions need role %s (or admin). Log in with such a token.", s.who, s.role, api.RoleOperate))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		c.fail(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	if !s.validCSRF(r.PostForm.Get("csrf")) {
		c.fail(w, r, http.StatusForbidden, "This form has expired or did not come from this console. Go back, reload the page and try again.")
		return
	}
	req := api.ActionRequest{
		Action: r.PostForm.Get("action"), Machine: r.PostForm.Get("machine"),
		Run: r.PostForm.Get("run"), Reason: strings.TrimSpace(r.PostForm.Get("reason")),
	}
	if err := req.Validate(); err != nil {
		c.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	ev, err := c.act.Perform(r.Context(), s.who, req)
	switch {
	case err == nil:
		c.log.Info("console action", "action", req.Action, "machine", req.Machine, "run", req.Run, "token", s.who)
		c.sessions.setFlash(s.id, "Done: "+ev.Message)
	case errors.Is(err, inventory.ErrNotFound):
		c.fail(w, r, http.StatusNotFound, err.Error())
		return
	case errors.Is(err, api.ErrNoActions):
		c.fail(w, r, http.StatusServiceUnavailable, "This server runs without the converge engine, so it cannot act.")
		return
	default:
		c.log.Warn("console action failed", "action", req.Action, "machine", req.Machine, "run", req.Run, "token", s.who, "err", err)
		c.sessions.setFlash(s.id, "Failed: "+err.Error())
	}
	http.Redirect(w, r, backTo(req), http.StatusSeeOther)
}

// latestEvents returns the newest n events matching q, oldest first. The
// store lists from the oldest, so it pages through once.
func latestEvents(ctx context.Context, st inventory.Store, q inventory.EventQuery, n int) ([]inventory.Event, error) {
	const page = 1000
	var ring []inventory.Event
	for {
		q.Limit = page
		evs, err := st.Events(ctx, q)
		if err != nil {
			return nil, err
		}
		ring = append(ring, evs...)
		if len(ring) > n {
			ring = append([]inventory.Event(nil), ring[len(ring)-n:]...)
		}
		if len(evs) < page {
			return ring, nil
		}
		q.AfterSeq = evs[len(evs)-1].Seq
	}
}
