package bmc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
	"github.com/stmcginnis/gofish/common"
)

// open returns a bmclib client for protocol, opened. For Redfish it first
// decides how to authenticate (once per Client): a service whose root
// names no SessionService takes HTTP Basic auth only, and a service whose
// session login fails is tried with Basic auth before giving up.
func (c *Client) open(ctx context.Context, protocol string) (*bmclib.Client, error) {
	if protocol != ProtocolRedfish {
		bc := c.newBMCLib(protocol, false)
		return bc, bc.Open(ctx)
	}
	c.mu.Lock()
	auth, chosen := c.auth, c.cfg.RedfishAuth != AuthAuto
	c.mu.Unlock()
	if auth == "" {
		sessions, err := c.probeSessions(ctx)
		if err != nil {
			return nil, err
		}
		if !sessions {
			c.setAuth(AuthBasic, "the service root names no SessionService")
			auth, chosen = AuthBasic, true
		} else {
			auth = AuthSession
		}
	}
	bc := c.newBMCLib(protocol, auth == AuthBasic)
	err := bc.Open(ctx)
	if err == nil {
		if c.Auth() == "" {
			c.setAuth(auth, "")
		}
		return bc, nil
	}
	if chosen || !sessionFailureMayFallBack(err, c.displayAddr(protocol)) {
		return nil, err
	}
	// The service names a SessionService but logging in failed: some
	// BMCs list one and refuse it, or allow only a few sessions at once.
	basic := c.newBMCLib(protocol, true)
	berr := basic.Open(ctx)
	if berr != nil {
		return nil, &authError{session: err, basic: berr}
	}
	why := classify(err, 0, protocol, c.displayAddr(protocol)).cause.Error()
	c.setAuth(AuthBasic, "creating a session failed ("+c.redact.scrub(why)+")")
	return basic, nil
}

// sessionFailureMayFallBack is false for failures that Basic auth cannot
// mend: nothing answers, it answers too slowly, its certificate is not
// trusted, or it refused the credentials (Basic auth would only hide that
// until the first request).
func sessionFailureMayFallBack(err error, addr string) bool {
	switch classify(err, 0, ProtocolRedfish, addr).kind {
	case ErrUnreachable, ErrTimeout, ErrTLS, ErrCredentials:
		return false
	}
	return true
}

// authError is a Redfish login that failed both ways. It unwraps to the
// Basic auth failure, whose status (401) classifies it.
type authError struct{ session, basic error }

func (e *authError) Error() string {
	return fmt.Sprintf("creating a Redfish session failed (%s), and HTTP Basic auth failed too: %s",
		classify(e.session, 0, ProtocolRedfish, "").cause, oneLine(e.basic.Error()))
}
func (e *authError) Unwrap() error { return e.basic }

// probeSessions reads the service root and reports whether it names a
// SessionService (or the Links.Sessions collection). The root is readable
// without credentials by the standard, but some services (sushy-tools with
// an auth file) demand Basic auth for every URL, so the credentials go
// along; a service that refuses them on the root is asked again without.
func (c *Client) probeSessions(ctx context.Context) (bool, error) {
	url := c.redfish.scheme + "://" + c.redfish.hostPort() + "/redfish/v1/"
	get := func(withAuth bool) (int, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Accept", "application/json")
		if withAuth {
			req.SetBasicAuth(c.cfg.Username, c.cfg.Password.reveal())
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, body, err
	}
	status, body, err := get(true)
	if err == nil && (status == http.StatusUnauthorized || status == http.StatusForbidden) {
		if s, b, err2 := get(false); err2 == nil && s/100 == 2 {
			status, body = s, b
		}
	}
	if err != nil {
		return false, err
	}
	if status == http.StatusNotFound {
		// Every Redfish service has /redfish/v1/; a 404 there is another
		// web server (a BMC's plain web UI, a different port), not a
		// Redfish service lacking a feature.
		return false, fmt.Errorf("read the service root %s: HTTP 404 Not Found: %w", url, ErrNotRedfish)
	}
	if status/100 != 2 {
		return false, fmt.Errorf("read the service root %s: %w", url, common.ConstructError(status, body))
	}
	var root struct {
		SessionService *struct {
			ID string `json:"@odata.id"`
		}
		Links struct {
			Sessions *struct {
				ID string `json:"@odata.id"`
			}
		}
	}
	if err := json.Unmarshal(body, &root); err != nil {
		return false, fmt.Errorf("read the service root %s: the answer is not Redfish JSON: %w", url, ErrNotRedfish)
	}
	return (root.SessionService != nil && root.SessionService.ID != "") ||
		(root.Links.Sessions != nil && root.Links.Sessions.ID != ""), nil
}
