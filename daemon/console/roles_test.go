package console_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/daemon/api/apitest"
	"github.com/metal-dev/metal/daemon/console"
)

// TestConsoleRoles: a read token logs in and reads, but its actions are
// refused with a page naming the role needed and nothing is carried out;
// an operate token acts; revoking a token ends its session at once.
func TestConsoleRoles(t *testing.T) {
	l := serve(t, false)
	reader := apitest.Token(t, l.Store, "viewer", api.RoleRead)
	csrfRE := regexp.MustCompile(`name="csrf" value="([^"]+)"`)

	login := func(secret string) (*http.Client, string) {
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar}
		resp, err := c.PostForm(l.url+console.Prefix+"login", url.Values{"token": {secret}, "next": {console.Prefix}})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := csrfRE.FindSubmatch(b)
		if resp.StatusCode != http.StatusOK || m == nil {
			t.Fatalf("login: %d, no session form in the page", resp.StatusCode)
		}
		return c, string(m[1])
	}
	act := func(c *http.Client, csrf string) (int, string) {
		form := url.Values{"csrf": {csrf}, "action": {api.ActionPowerCycle}, "machine": {"web-01"}}
		resp, err := c.PostForm(l.url+console.Prefix+"actions", form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	rc, rcsrf := login(reader)
	if code, body := act(rc, rcsrf); code != http.StatusForbidden || !strings.Contains(body, "role operate") {
		t.Errorf("action with a read token: %d; want 403 naming role operate:\n%s", code, body)
	}
	resp, err := rc.Get(l.url + console.Prefix + "confirm?action=power-cycle&machine=web-01")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `id="need-role"`) || strings.Contains(string(b), `id="confirm"`) {
		t.Errorf("confirm page for a read token offers the action:\n%s", b)
	}
	if calls := l.actions.Calls(); len(calls) != 0 {
		t.Fatalf("a read token carried out %v", calls)
	}

	oc, ocsrf := login(l.token)
	if code, body := act(oc, ocsrf); code != http.StatusOK {
		t.Errorf("action with an operate token: %d\n%s", code, body)
	}
	if len(l.actions.Calls()) != 1 {
		t.Errorf("operate token: actions carried out %v, want one", l.actions.Calls())
	}

	// Revoked: the session ends at its next request.
	if err := l.Store.DeleteAPIToken(context.Background(), "ops"); err != nil {
		t.Fatal(err)
	}
	if code, _ := act(oc, ocsrf); code != http.StatusForbidden {
		t.Errorf("action after the token was revoked: %d, want 403", code)
	}
	if len(l.actions.Calls()) != 1 {
		t.Errorf("a revoked token's session carried out %v", l.actions.Calls())
	}
}
