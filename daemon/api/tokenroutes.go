package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/metal-dev/metal/inventory"
)

// TokenAdmin manages API tokens: *Tokens over the store, or a client of a
// running daemon.
type TokenAdmin interface {
	Create(ctx context.Context, req NewToken) (CreatedToken, error)
	Revoke(ctx context.Context, name string) error
	List(ctx context.Context) ([]TokenInfo, error)
}

// NewTokenRequest is the body of POST .../tokens.
type NewTokenRequest struct {
	Name string `json:"name,omitempty"`
	Role Role   `json:"role"`
	// ExpiresIn is a Go duration ("24h", "90m"); "" never expires.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// TokenList is the body of GET .../tokens.
type TokenList struct {
	Tokens []TokenInfo `json:"tokens"`
}

// TokensHandler serves token administration at base: GET lists, POST
// creates, DELETE base/{name} revokes. The API mounts it behind the admin
// role; the daemon's local socket mounts it for `metal token`, the
// socket's file mode being the check.
func TokensHandler(v TokenVerifier, base string) http.Handler {
	t, _ := v.(*Tokens)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if t == nil {
			writeError(w, http.StatusServiceUnavailable, "this server keeps no API tokens")
			return
		}
		switch {
		case r.Method == http.MethodGet && r.URL.Path == base:
			list, err := t.List(r.Context())
			if err != nil {
				writeError(w, http.StatusServiceUnavailable, "inventory store: "+err.Error())
				return
			}
			writeJSON(w, http.StatusOK, TokenList{Tokens: list})
		case r.Method == http.MethodPost && r.URL.Path == base:
			var req NewTokenRequest
			if err := decodeStrict(http.MaxBytesReader(w, r.Body, maxBody), &req); err != nil {
				writeError(w, http.StatusBadRequest, err.Error())
				return
			}
			nt := NewToken{Name: req.Name, Role: req.Role}
			if req.ExpiresIn != "" {
				d, err := time.ParseDuration(req.ExpiresIn)
				if err != nil || d <= 0 {
					writeError(w, http.StatusBadRequest, "expires_in "+req.ExpiresIn+": give a positive duration such as 24h or 90m")
					return
				}
				nt.TTL = d
			}
			created, err := t.Create(r.Context(), nt)
			switch {
			case errors.Is(err, errInvalidAction):
				writeError(w, http.StatusBadRequest, err.Error())
			case errors.Is(err, inventory.ErrConflict):
				writeError(w, http.StatusConflict, err.Error())
			case err != nil:
				writeError(w, http.StatusServiceUnavailable, err.Error())
			default:
				writeJSON(w, http.StatusCreated, created)
			}
		case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, base+"/"):
			name := strings.TrimPrefix(r.URL.Path, base+"/")
			err := t.Revoke(r.Context(), name)
			switch {
			case errors.Is(err, inventory.ErrNotFound):
				writeError(w, http.StatusNotFound, "no token called "+name)
			case errors.Is(err, inventory.ErrInvalid):
				writeError(w, http.StatusBadRequest, err.Error())
			case err != nil:
				writeError(w, http.StatusServiceUnavailable, err.Error())
			default:
				w.WriteHeader(http.StatusNoContent)
			}
		default:
			writeError(w, http.StatusNotFound, "no such token route: "+r.Method+" "+r.URL.Path)
		}
	})
}
