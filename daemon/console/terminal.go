package console

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/metal-dev/metal/daemon/api"
)

type terminalView struct {
	Name   string
	Socket string
	// Interactive says whether this viewer may type (an operator's
	// login); others watch.
	Interactive bool
	Login       string
}

// terminalCSP lets xterm.js style its own rows: it writes <style>
// elements as it renders. Scripts stay as strict as on every page.
var terminalCSP = strings.Replace(csp, "style-src 'self'", "style-src 'self' 'unsafe-inline'", 1)

// terminalPage shows a machine's serial console in a terminal.
func (c *console) terminalPage(w http.ResponseWriter, r *http.Request) {
	m, err := c.opts.Store.Machine(r.Context(), r.PathValue("name"))
	if err != nil {
		c.storeFail(w, r, err)
		return
	}
	if c.opts.Serial == nil {
		c.fail(w, r, http.StatusNotFound, "This server knows no serial consoles. metal serve --console-socket PATTERN gives it the machines' console sockets (the lab does).")
		return
	}
	v := terminalView{Name: m.Name, Socket: Prefix + "machines/" + url.PathEscape(m.Name) + "/serial", Interactive: c.canOperate(r)}
	if !v.Interactive {
		v.Login = Prefix + "login?next=" + url.QueryEscape(r.URL.RequestURI())
	}
	w.Header().Set("Content-Security-Policy", terminalCSP)
	c.render(w, r, http.StatusOK, "terminal.html", m.Name+" console", "machines", v)
}

// serialSocket is the terminal's WebSocket to the machine's console.
func (c *console) serialSocket(w http.ResponseWriter, r *http.Request) {
	if c.opts.Serial == nil {
		http.Error(w, "no serial consoles", http.StatusNotFound)
		return
	}
	who := ""
	if s := c.session(r); s != nil {
		who = s.who
	}
	api.SerialConsole{Hub: c.opts.Serial, Store: c.opts.Store, Logger: c.log}.Serve(w, r, r.PathValue("name"), who, c.canOperate(r))
}

// canOperate says whether the request's login may act on machines.
func (c *console) canOperate(r *http.Request) bool {
	s := c.session(r)
	return s != nil && s.CanOperate()
}
