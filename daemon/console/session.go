package console

import (
	"crypto/rand"
	"crypto/subtle"
	"net/http"
	"sync"
	"time"

	"github.com/metal-dev/metal/daemon/api"
)

// cookieName is the console's session cookie.
const cookieName = "metal_session"

// maxSessions bounds the session table: logging in again and again cannot
// grow it without limit; the oldest session goes first.
const maxSessions = 1000

// session is one logged-in browser. Sessions live in memory: a restarted
// daemon asks operators to log in again, which is cheap and keeps no
// secret on disk.
type session struct {
	id      string
	who     string // the API token's name
	role    api.Role
	secret  string // the token itself, checked again at every request
	csrf    string // the form token every POST must carry
	expires time.Time
	flash   string // one message for the next page
}

type sessions struct {
	ttl time.Duration
	now func() time.Time

	mu   sync.Mutex
	byID map[string]*session
}

func newSessions(ttl time.Duration, now func() time.Time) *sessions {
	return &sessions{ttl: ttl, now: now, byID: map[string]*session{}}
}

// randomID is 256 random bits; crypto/rand never fails (Go 1.24+).
func randomID() string { return rand.Text() + rand.Text() }

// create starts a session for who, logged in with secret.
func (s *sessions) create(id api.Identity, secret string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for id, x := range s.byID {
		if now.After(x.expires) {
			delete(s.byID, id)
		}
	}
	if len(s.byID) >= maxSessions {
		var oldest *session
		for _, x := range s.byID {
			if oldest == nil || x.expires.Before(oldest.expires) {
				oldest = x
			}
		}
		delete(s.byID, oldest.id)
	}
	x := &session{id: randomID(), who: id.Name, role: id.Role, secret: secret, csrf: randomID(), expires: now.Add(s.ttl)}
	s.byID[x.id] = x
	return x
}

// get returns a copy of the request's session, or nil.
func (s *sessions) get(r *http.Request) *session {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.byID[c.Value]
	if x == nil {
		return nil
	}
	if s.now().After(x.expires) {
		delete(s.byID, x.id)
		return nil
	}
	cp := *x
	return &cp
}

// popFlash returns and clears the session's flash message.
func (s *sessions) popFlash(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.byID[id]
	if x == nil {
		return ""
	}
	f := x.flash
	x.flash = ""
	return f
}

func (s *sessions) setFlash(id, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if x := s.byID[id]; x != nil {
		x.flash = msg
	}
}

func (s *sessions) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, id)
}

// validCSRF compares the form's token with the session's in constant time.
func (x *session) validCSRF(token string) bool {
	return x != nil && token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(x.csrf)) == 1
}

// CSRF is the form token templates put in every POST form.
func (x *session) CSRF() string { return x.csrf }

// Who is the name of the token the operator logged in with.
func (x *session) Who() string { return x.who }

// CanOperate reports whether the session's token may act (role operate
// or admin), so pages offer actions only to those who may take them.
func (x *session) CanOperate() bool { return x.role.Allows(api.RoleOperate) }
