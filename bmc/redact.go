package bmc

import (
	"encoding/base64"
	"net/url"
	"regexp"
	"strings"
)

// MinLiteralSecret is the shortest secret that is redacted wherever its
// text occurs. A shorter one ("x", "1234") is a substring of ordinary
// words and numbers; replacing every occurrence would mangle every message
// ("unable to eREDACTEDecute request") and tell a reader the secret
// besides. Such secrets are redacted only where credentials appear: in
// URLs, authorisation headers, JSON bodies and command lines.
const MinLiteralSecret = 6

// credentialPatterns find the places where a credential is written, so
// that it is redacted there whatever it is and however short. Each has
// one group: the text kept before the secret.
var credentialPatterns = []*regexp.Regexp{
	// scheme://user:password@host
	regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:)[^@\s/]*(?:@)`),
	// Authorization: Basic dXNlcjpwYXNz (as dumped by net/http/httputil)
	regexp.MustCompile(`(?i)((?:proxy-)?authorization:\s*(?:basic|bearer|digest|negotiate)\s+)[^\s"',]+`),
	// X-Auth-Token: 0123... (a Redfish session token)
	regexp.MustCompile(`(?i)(x-auth-token:\s*)[^\s"',]+`),
	// "Password": "...", "Token": "..." in JSON or a Python dict's repr
	regexp.MustCompile(`(?i)(["'](?:password|passwd|token|x-auth-token|authorization)["']\s*:\s*["'])(?:[^"'\\]|\\.)*`),
	// password=... in query strings and form bodies
	regexp.MustCompile(`(?i)((?:^|[?&\s;])(?:password|passwd|pwd)=)[^&\s;"']*`),
	// ipmitool -P secret, --password secret, --password=secret
	regexp.MustCompile(`((?:^|\s)(?:-P|--password)(?:\s+|=))\S+`),
}

// redactor removes credentials from text: at the places credentials are
// written, always, and a known secret's text (with its URL-encoded and
// base64 forms) wherever it occurs, if it is long enough to be told from
// ordinary text.
type redactor struct {
	literals []string
}

// newRedactor returns a redactor for the password of user. A password
// equal to the username is not redacted as free text: the username is not
// secret and appears in messages, and every one of them would be mangled.
func newRedactor(user string, secrets ...string) redactor {
	var r redactor
	add := func(s string) {
		if len(s) >= MinLiteralSecret && s != user {
			r.literals = append(r.literals, s)
		}
	}
	for _, sec := range secrets {
		if sec == "" {
			continue
		}
		add(sec)
		add(url.QueryEscape(sec))
		add(url.PathEscape(sec))
		add(base64.StdEncoding.EncodeToString([]byte(sec)))
		// The value of an Authorization: Basic header: distinctive
		// whatever the password's length.
		add(base64.StdEncoding.EncodeToString([]byte(user + ":" + sec)))
	}
	// Longest first, so that a secret's encoded form is replaced whole
	// before a shorter form inside it.
	for i := 1; i < len(r.literals); i++ {
		for j := i; j > 0 && len(r.literals[j]) > len(r.literals[j-1]); j-- {
			r.literals[j], r.literals[j-1] = r.literals[j-1], r.literals[j]
		}
	}
	return r
}

func (r redactor) scrub(s string) string {
	for _, re := range credentialPatterns {
		s = re.ReplaceAllStringFunc(s, func(m string) string {
			sub := re.FindStringSubmatch(m)
			rest := ""
			if strings.HasSuffix(m, "@") && strings.Contains(sub[1], "://") {
				rest = "@"
			}
			if m[len(sub[1]):] == redacted+rest {
				return m
			}
			return sub[1] + redacted + rest
		})
	}
	for _, lit := range r.literals {
		s = strings.ReplaceAll(s, lit, redacted)
	}
	return s
}

// scrubbedError shows a redacted message while keeping the chain for
// errors.Is and errors.As.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

func (r redactor) wrap(err error) error {
	if err == nil {
		return nil
	}
	return &scrubbedError{msg: r.scrub(err.Error()), err: err}
}
