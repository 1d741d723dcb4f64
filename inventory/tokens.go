package inventory

import (
	"context"
	"fmt"
	"time"
)

// pfxToken holds the API tokens: tokens/<name> → APIToken. They live in the
// store, not in one server's state directory, so every metal server of an
// etcd site honours the same set, and a revoke is seen by all at once.
const pfxToken = "tokens/"

// APIToken is an API token as the store keeps it: who it is, what it may
// do, until when, and a salted hash of its secret. The secret itself is
// never stored; whoever holds the store cannot log in with what it finds.
type APIToken struct {
	Name string `json:"name"`
	// Role is what the token may do ("read", "operate", "admin"); the API
	// gives it meaning.
	Role string `json:"role"`
	// Salt and Hash: Hash is SHA-256 of Salt followed by the secret.
	Salt []byte `json:"salt"`
	Hash []byte `json:"hash"`
	// Created is when the token was made; Expires when it stops working
	// (zero: never).
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"`
	// LastUsed is when a request last came with the token (to the minute:
	// the API writes it at most once a minute per token).
	LastUsed time.Time `json:"last_used,omitzero"`
	// Revision is the store revision of the last write.
	Revision int64 `json:"-"`
}

// APITokens returns every token, sorted by name.
func (s *store) APITokens(ctx context.Context) ([]APIToken, error) {
	kvs, _, err := s.kv.List(ctx, KeyRange{Prefix: pfxToken})
	if err != nil {
		return nil, fmt.Errorf("list api tokens: %w", err)
	}
	out := make([]APIToken, 0, len(kvs))
	for _, kv := range kvs {
		t, err := decode[APIToken](kv)
		if err != nil {
			return nil, err
		}
		t.Revision = kv.ModRev
		out = append(out, t)
	}
	return out, nil
}

// PutAPIToken creates (Revision 0) or updates a token. An update of a
// token revoked meanwhile fails with ErrConflict, so recording a use never
// brings a revoked token back.
func (s *store) PutAPIToken(ctx context.Context, t APIToken) (APIToken, error) {
	if !validName(t.Name) || t.Role == "" || len(t.Hash) == 0 {
		return APIToken{}, fmt.Errorf("api token %q: needs a name, a role and a hash: %w", t.Name, ErrInvalid)
	}
	rev, err := s.cas(ctx, "api token", t.Name, pfxToken+t.Name, t.Revision, mustJSON(t))
	if err != nil {
		return APIToken{}, err
	}
	t.Revision = rev
	return t, nil
}

// DeleteAPIToken removes the token called name.
func (s *store) DeleteAPIToken(ctx context.Context, name string) error {
	if !validName(name) {
		return fmt.Errorf("api token %q: %w", name, ErrInvalid)
	}
	cur, found, err := s.kv.Get(ctx, pfxToken+name)
	if err != nil {
		return fmt.Errorf("delete api token %s: %w", name, err)
	}
	if !found {
		return fmt.Errorf("api token %s: %w", name, ErrNotFound)
	}
	_, ok, err := s.kv.Txn(ctx, Txn{If: []Cond{{Key: cur.Key, ModRev: cur.ModRev}}, Then: []Op{Del(cur.Key)}})
	if err != nil {
		return fmt.Errorf("delete api token %s: %w", name, err)
	}
	if !ok {
		return fmt.Errorf("api token %s changed meanwhile: %w", name, ErrConflict)
	}
	return nil
}
