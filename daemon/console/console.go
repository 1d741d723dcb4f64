// Package console is metal's web console: server-rendered pages over the
// inventory store (machines, one machine, the rollout, the plan) that read
// without JavaScript, a few lines of script that keep them live over
// server-sent events, and the operator's actions (power cycle,
// reprovision, halt a rollout) behind a login with an API token, each
// confirmed on its own page, CSRF-protected and recorded as an event.
//
// Everything lives under Prefix; templates and assets are embedded.
package console

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"time"

	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/daemon/serial"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// Prefix is where the console lives; the daemon mounts New's handler
// there (and may redirect "/" to it).
const Prefix = "/console/"

// Options are what the console shows and acts with.
type Options struct {
	// Store is the inventory shown. Required.
	Store inventory.Store
	// Actions carry out operator actions; nil hides them.
	Actions api.Actions
	// Planner computes the plan page; nil shows "no site loaded".
	Planner api.Planner
	// Site returns the site being served (nil: none): its rollout's by
	// label groups machines into racks where they have no rack label, its
	// networks and images fill in an adopted machine's block.
	Site func() *site.Site
	// Serial shares machines' serial consoles for the browser terminal;
	// nil: the machine pages offer none.
	Serial *serial.Hub
	// Tokens verifies the API token operators log in with.
	Tokens api.TokenVerifier
	// OpenReads shows the pages without logging in; actions always need
	// a login.
	OpenReads bool
	// SecureCookie marks the session cookie Secure (the console is
	// behind TLS).
	SecureCookie bool
	// SessionTTL is how long a login lasts; default 12 hours.
	SessionTTL time.Duration
	// Debounce bounds how often a live page is re-rendered while the
	// store changes; default 250 ms.
	Debounce time.Duration
	Logger   *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

type console struct {
	opts     Options
	log      *slog.Logger
	tmpl     *template.Template
	sessions *sessions
	act      api.Performer
	last     *lastEvents
}

// New returns the console's handler.
func New(opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 12 * time.Hour
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 250 * time.Millisecond
	}
	c := &console{
		opts:     opts,
		log:      opts.Logger.With("server", "console"),
		sessions: newSessions(opts.SessionTTL, opts.Now),
		act:      api.Performer{Store: opts.Store, Actions: opts.Actions},
		last:     newLastEvents(),
	}
	tmpl, err := template.New("").Funcs(c.funcs()).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		// The templates are embedded and parsed by every test run; this
		// answers instead of panicking should a build ever break them.
		c.log.Error("console templates", "err", err)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "metal console: broken templates: "+err.Error(), http.StatusInternalServerError)
		})
	}
	c.tmpl = tmpl
	static, _ := fs.Sub(staticFS, "static")

	mux := http.NewServeMux()
	read := func(h http.HandlerFunc) http.Handler { return c.readable(h) }
	mux.Handle("GET "+Prefix+"{$}", read(c.machinesPage))
	mux.Handle("GET "+Prefix+"machines/{name}", read(c.machinePage))
	mux.Handle("GET "+Prefix+"racks", read(c.racksPage))
	mux.Handle("GET "+Prefix+"machines/{name}/terminal", read(c.terminalPage))
	mux.Handle("GET "+Prefix+"machines/{name}/adopt", read(c.adoptPage))
	mux.Handle("GET "+Prefix+"machines/{name}/serial", read(c.serialSocket))
	mux.Handle("GET "+Prefix+"rollout", read(c.rolloutPage))
	mux.Handle("GET "+Prefix+"rollout/{id}", read(c.rolloutPage))
	mux.Handle("GET "+Prefix+"plan", read(c.planPage))
	mux.Handle("GET "+Prefix+"stream", read(c.stream))
	mux.HandleFunc("GET "+Prefix+"login", c.loginPage)
	mux.HandleFunc("POST "+Prefix+"login", c.login)
	mux.HandleFunc("POST "+Prefix+"logout", c.logout)
	mux.HandleFunc("GET "+Prefix+"confirm", c.confirmPage)
	mux.HandleFunc("POST "+Prefix+"actions", c.action)
	mux.Handle("GET "+Prefix+"static/", http.StripPrefix(Prefix+"static/", cached(http.FileServerFS(static))))
	mux.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, http.StatusNotFound, "There is no such page.")
	})

	// Forms carry a per-session token; this also refuses any cross-site
	// POST (login included) by its Origin and Sec-Fetch-Site headers.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, http.StatusForbidden, "This form was sent from another site; metal refused it. Open the console directly and try again.")
	}))
	return c.recovered(securityHeaders(cop.Handler(mux)))
}

func cached(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		h.ServeHTTP(w, r)
	})
}

const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"

// securityHeaders: no inline script or style (so injected markup cannot
// run), no framing (clickjacking of the action buttons), no referrer
// leaking machine names elsewhere.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

func (c *console) recovered(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				c.log.Error("console handler panic", "method", r.Method, "path", r.URL.Path,
					"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				http.Error(w, "metal console: internal error; the server log has the details", http.StatusInternalServerError)
			}
		}()
		h.ServeHTTP(w, r)
	})
}

// readable lets a request through when reads are open or it has a
// session; else it sends the browser to log in and come back.
func (c *console) readable(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.opts.OpenReads || c.session(r) != nil {
			h(w, r)
			return
		}
		if r.URL.Path == Prefix+"stream" || strings.HasSuffix(r.URL.Path, "/serial") {
			http.Error(w, "log in first", http.StatusUnauthorized)
			return
		}
		http.Redirect(w, r, Prefix+"login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
	})
}

// session returns the request's session while the token it logged in
// with is still valid: revoking a token, or its expiry, ends the sessions
// it opened at their next request, not hours later.
func (c *console) session(r *http.Request) *session {
	x := c.sessions.get(r)
	if x == nil {
		return nil
	}
	if c.opts.Tokens == nil {
		c.sessions.remove(x.id)
		return nil
	}
	id, err := c.opts.Tokens.Verify(r.Context(), x.secret)
	if err != nil || id.Name != x.who {
		c.sessions.remove(x.id)
		c.log.Info("console session ended: its token was revoked or expired", "token", x.who, "client", r.RemoteAddr, "err", err)
		return nil
	}
	x.role = id.Role
	return x
}

// page is what every page template gets.
type page struct {
	Title   string
	Nav     string
	Session *session
	Flash   string
	Prefix  string
	Data    any
}

func (c *console) render(w http.ResponseWriter, r *http.Request, status int, name, title, nav string, data any) {
	p := page{Title: title, Nav: nav, Session: c.session(r), Prefix: Prefix, Data: data}
	if p.Session != nil {
		p.Flash = c.sessions.popFlash(p.Session.id)
	}
	var buf bytes.Buffer
	if err := c.tmpl.ExecuteTemplate(&buf, name, p); err != nil {
		c.log.Error("render", "template", name, "err", err)
		http.Error(w, "metal console: render "+name+": internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// fail shows an error page that says what to do.
func (c *console) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	c.render(w, r, status, "error.html", http.StatusText(status), "", msg)
}

func (c *console) storeFail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, inventory.ErrNotFound) {
		c.fail(w, r, http.StatusNotFound, "Not found: "+err.Error())
		return
	}
	if r.Context().Err() != nil {
		return
	}
	c.log.Error("console store read", "path", r.URL.Path, "err", err)
	c.fail(w, r, http.StatusServiceUnavailable, "The inventory store did not answer: "+err.Error()+". Reload in a moment.")
}

// safeNext keeps a login's redirect on the console, so a crafted link
// cannot send an operator elsewhere after logging in.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.IsAbs() || u.Host != "" || !strings.HasPrefix(u.Path, Prefix) || strings.HasPrefix(next, "//") {
		return Prefix
	}
	return u.RequestURI()
}
