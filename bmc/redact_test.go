package bmc

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestRedact: credentials are removed where they are written, whatever
// their length; a short secret or one equal to the username leaves
// ordinary text alone; a long one is removed everywhere, in its encoded
// forms too.
func TestRedact(t *testing.T) {
	basic := func(user, pass string) string { return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass)) }
	tests := map[string]struct {
		user, pass string
		in, want   string
	}{
		"one letter: ordinary message intact": {
			user: "admin", pass: "x",
			in:   "provider: gofish: unable to execute request, no target provided; max 0x1f exceeded",
			want: "provider: gofish: unable to execute request, no target provided; max 0x1f exceeded",
		},
		"one letter: in a URL": {
			user: "admin", pass: "x",
			in:   `Get "http://admin:x@127.0.0.1:8000/redfish/v1/": connection refused`,
			want: `Get "http://admin:REDACTED@127.0.0.1:8000/redfish/v1/": connection refused`,
		},
		"one letter: basic auth header in a dump": {
			user: "admin", pass: "x",
			in:   "GET /redfish/v1/Systems HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic " + basic("admin", "x") + "\r\n",
			want: "GET /redfish/v1/Systems HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic REDACTED\r\n",
		},
		"one letter: basic credentials in free text": {
			user: "admin", pass: "x",
			in:   "sent " + basic("admin", "x") + " twice",
			want: "sent REDACTED twice",
		},
		"one letter: session request body": {
			user: "admin", pass: "x",
			in:   `POST /redfish/v1/SessionService/Sessions {"UserName":"admin","Password":"x"}`,
			want: `POST /redfish/v1/SessionService/Sessions {"UserName":"admin","Password":"REDACTED"}`,
		},
		"one letter: python repr": {
			user: "admin", pass: "x",
			in:   `auth {'username': 'admin', 'password': 'x'} refused`,
			want: `auth {'username': 'admin', 'password': 'REDACTED'} refused`,
		},
		"one letter: argv": {
			user: "admin", pass: "x",
			in:   "ipmitool -I lanplus -H 10.0.0.5 -U admin -P x chassis power status: exit status 1",
			want: "ipmitool -I lanplus -H 10.0.0.5 -U admin -P REDACTED chassis power status: exit status 1",
		},
		"one letter: query string": {
			user: "admin", pass: "x",
			in:   "GET /login?user=admin&password=x&next=/ failed",
			want: "GET /login?user=admin&password=REDACTED&next=/ failed",
		},
		"session token header": {
			user: "admin", pass: "x",
			in:   "X-Auth-Token: 3f2a9c0d11aa\r\nOData-Version: 4.0",
			want: "X-Auth-Token: REDACTED\r\nOData-Version: 4.0",
		},
		"password equal to username: username stays": {
			user: "operator", pass: "operator",
			in:   "HTTP 401 Unauthorized: login of user operator refused",
			want: "HTTP 401 Unauthorized: login of user operator refused",
		},
		"password equal to username: URL redacted": {
			user: "operator", pass: "operator",
			in:   "https://operator:operator@bmc1/redfish/v1",
			want: "https://operator:REDACTED@bmc1/redfish/v1",
		},
		"long secret: anywhere": {
			user: "root", pass: "hunter2-secret",
			in:   "login hunter2-secret failed",
			want: "login REDACTED failed",
		},
		"long secret: URL-encoded": {
			user: "root", pass: "p@ss word!",
			in:   "GET /x?q=p%40ss+word%21 and /y/p@ss%20word%21",
			want: "GET /x?q=REDACTED and /y/REDACTED",
		},
		"long secret: base64 alone": {
			user: "root", pass: "hunter2-secret",
			in:   "token " + base64.StdEncoding.EncodeToString([]byte("hunter2-secret")),
			want: "token REDACTED",
		},
		"no credentials: untouched": {
			user: "root", pass: "hunter2-secret",
			in:   "the BMC refused the credentials (check the BMC username and password)",
			want: "the BMC refused the credentials (check the BMC username and password)",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := newRedactor(tc.user, tc.pass)
			got := r.scrub(tc.in)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("scrub (-want +got):\n%s", diff)
			}
			if again := r.scrub(got); again != got {
				t.Errorf("scrub is not idempotent: %q", again)
			}
			// The error wrapper shows the same text and keeps the chain.
			cause := errors.New(tc.in)
			if w := r.wrap(cause); w.Error() != got || !errors.Is(w, cause) {
				t.Errorf("wrap = %q (Is %v)", w.Error(), errors.Is(w, cause))
			}
			if len(tc.pass) >= MinLiteralSecret && tc.pass != tc.user && strings.Contains(got, tc.pass) {
				t.Errorf("secret left in %q", got)
			}
		})
	}
}
