package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/metal-dev/metal/inventory"
)

// Role is what a token may do. Each role may do everything the ones
// before it may.
type Role string

const (
	// RoleRead reads machines, events, the plan and runs.
	RoleRead Role = "read"
	// RoleOperate also acts: power cycle, reprovision, halt a rollout.
	RoleOperate Role = "operate"
	// RoleAdmin also creates, lists and revokes tokens.
	RoleAdmin Role = "admin"
)

// Roles lists the roles, weakest first.
func Roles() []Role { return []Role{RoleRead, RoleOperate, RoleAdmin} }

func (r Role) rank() int {
	for i, x := range Roles() {
		if x == r {
			return i + 1
		}
	}
	return 0
}

// Allows reports whether a token of role r may do what needs role need.
func (r Role) Allows(need Role) bool { return r.rank() > 0 && r.rank() >= need.rank() }

// ParseRole reads a role's name.
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	if r.rank() == 0 {
		return "", fmt.Errorf("role %q: use read, operate or admin", s)
	}
	return r, nil
}

// Identity is who a verified token says the caller is.
type Identity struct {
	Name string
	Role Role
}

// Why a token is refused.
var (
	ErrTokenInvalid = errors.New("the API token is not valid (unknown or revoked)")
	ErrTokenExpired = errors.New("the API token has expired")
)

// TokenVerifier says whose a bearer token is. *Tokens is the one metal
// uses; the console shares it so one token logs in to both.
type TokenVerifier interface {
	// Verify returns the identity of the token secret, or an error
	// (ErrTokenInvalid, ErrTokenExpired, or the store's) refusing it.
	Verify(ctx context.Context, secret string) (Identity, error)
}

// TokenFile is the name of the token file older metals kept in the state
// directory; MigrateTokenFile moves its tokens into the store.
const TokenFile = "api-tokens"

// tokenPrefix marks metal's API tokens, so a leaked one is recognisable
// (secret scanners, logs).
const tokenPrefix = "metal_"

// useEvery is how often the last use of a token is written to the store:
// often enough for `metal token list`, rarely enough that reads do not
// turn into writes.
const useEvery = time.Minute

// Tokens are the API tokens kept in the inventory store. Each is a name,
// a role, an optional expiry and SHA-256 of a random salt followed by the
// secret. Secrets are 32 random bytes, so a salted fast hash is enough:
// there is nothing to guess a dictionary from. Every request reads the
// store, so a token revoked or expired is refused at once, by every metal
// server sharing the store.
type Tokens struct {
	store inventory.Store
	now   func() time.Time
	log   *slog.Logger

	mu   sync.Mutex
	used map[string]time.Time // token name → when its last use was written
}

// NewTokens returns the tokens of store. now is the clock (nil: time.Now).
func NewTokens(store inventory.Store, now func() time.Time, log *slog.Logger) *Tokens {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Tokens{store: store, now: now, log: log, used: map[string]time.Time{}}
}

// Verify implements TokenVerifier. Every token is compared in constant
// time, so timing tells nothing about which prefix matched.
func (t *Tokens) Verify(ctx context.Context, secret string) (Identity, error) {
	if !strings.HasPrefix(secret, tokenPrefix) {
		return Identity{}, ErrTokenInvalid
	}
	all, err := t.store.APITokens(ctx)
	if err != nil {
		return Identity{}, fmt.Errorf("read api tokens: %w", err)
	}
	var found *inventory.APIToken
	for i := range all {
		e := &all[i]
		sum := sha256.Sum256(append(append([]byte(nil), e.Salt...), secret...))
		if subtle.ConstantTimeCompare(sum[:], e.Hash) == 1 && found == nil {
			found = e
		}
	}
	if found == nil {
		return Identity{}, ErrTokenInvalid
	}
	now := t.now()
	if !found.Expires.IsZero() && !now.Before(found.Expires) {
		return Identity{}, fmt.Errorf("%w (token %s, at %s)", ErrTokenExpired, found.Name, found.Expires.UTC().Format(time.RFC3339))
	}
	role, err := ParseRole(found.Role)
	if err != nil {
		return Identity{}, fmt.Errorf("token %s: %w", found.Name, err)
	}
	t.recordUse(ctx, *found, now)
	return Identity{Name: found.Name, Role: role}, nil
}

// recordUse writes the token's last use, at most once per useEvery. A
// failure only costs the record: the request goes on.
func (t *Tokens) recordUse(ctx context.Context, tok inventory.APIToken, now time.Time) {
	t.mu.Lock()
	last, seen := t.used[tok.Name]
	due := (!seen || now.Sub(last) >= useEvery) && now.Sub(tok.LastUsed) >= useEvery
	if due {
		t.used[tok.Name] = now
	}
	t.mu.Unlock()
	if !due {
		return
	}
	tok.LastUsed = now.UTC().Truncate(time.Second)
	if _, err := t.store.PutAPIToken(ctx, tok); err != nil && !errors.Is(err, inventory.ErrConflict) {
		t.log.Warn("record api token use", "token", tok.Name, "err", err)
	}
}

// TokenInfo is a token as `metal token list` and the API show it: never
// its secret nor its hash.
type TokenInfo struct {
	Name     string    `json:"name"`
	Role     Role      `json:"role"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires,omitzero"`
	LastUsed time.Time `json:"last_used,omitzero"`
}

func infoOf(t inventory.APIToken) TokenInfo {
	return TokenInfo{Name: t.Name, Role: Role(t.Role), Created: t.Created, Expires: t.Expires, LastUsed: t.LastUsed}
}

// NewToken asks for a token.
type NewToken struct {
	// Name is how the token shows in lists and events; "" picks one.
	Name string `json:"name,omitempty"`
	Role Role   `json:"role"`
	// TTL is how long the token lives (0: until revoked).
	TTL time.Duration `json:"ttl,omitempty"`
}

// CreatedToken answers a token's creation: its secret, shown this once.
type CreatedToken struct {
	Token  TokenInfo `json:"token"`
	Secret string    `json:"secret"`
}

var tokenName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// Create makes a token and returns its secret, which is never stored.
func (t *Tokens) Create(ctx context.Context, req NewToken) (CreatedToken, error) {
	if req.Name == "" {
		req.Name = "token-" + strings.ToLower(rand.Text()[:8])
	}
	if !tokenName.MatchString(req.Name) {
		return CreatedToken{}, fmt.Errorf("%w: token name %q: use letters, digits, '.', '_', '@' or '-', at most 64", errInvalidAction, req.Name)
	}
	if _, err := ParseRole(string(req.Role)); err != nil {
		return CreatedToken{}, fmt.Errorf("%w: %v", errInvalidAction, err)
	}
	if req.TTL < 0 {
		return CreatedToken{}, fmt.Errorf("%w: a token's lifetime must be positive", errInvalidAction)
	}
	raw := make([]byte, 32)
	salt := make([]byte, 16)
	rand.Read(raw)
	rand.Read(salt)
	secret := tokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256(append(append([]byte(nil), salt...), secret...))
	now := t.now().UTC().Truncate(time.Second)
	rec := inventory.APIToken{Name: req.Name, Role: string(req.Role), Salt: salt, Hash: sum[:], Created: now}
	if req.TTL > 0 {
		rec.Expires = now.Add(req.TTL)
	}
	rec, err := t.store.PutAPIToken(ctx, rec)
	if errors.Is(err, inventory.ErrConflict) {
		return CreatedToken{}, fmt.Errorf("token %q already exists: pick another name, or revoke it first: %w", req.Name, err)
	}
	if err != nil {
		return CreatedToken{}, err
	}
	return CreatedToken{Token: infoOf(rec), Secret: secret}, nil
}

// Revoke deletes the token called name; requests with it are refused
// from then on, and console sessions it opened end.
func (t *Tokens) Revoke(ctx context.Context, name string) error {
	return t.store.DeleteAPIToken(ctx, name)
}

// List returns every token, sorted by name.
func (t *Tokens) List(ctx context.Context) ([]TokenInfo, error) {
	all, err := t.store.APITokens(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]TokenInfo, len(all))
	for i, e := range all {
		out[i] = infoOf(e)
	}
	return out, nil
}

// MigrateTokenFile moves the tokens of an older metal's token file (path)
// into the store as admin tokens (they could do everything), then renames
// the file to path+".migrated" so it is read once. A name already in the
// store keeps the store's token. A missing file is nothing to do.
func MigrateTokenFile(ctx context.Context, store inventory.Store, path string, log *slog.Logger) (int, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("migrate api tokens: %w", err)
	}
	entries, err := parseTokenFile(data)
	if err != nil {
		return 0, fmt.Errorf("migrate api tokens %s: %w", path, err)
	}
	fi, _ := os.Stat(path)
	n := 0
	for _, e := range entries {
		e.Role = string(RoleAdmin)
		if fi != nil {
			e.Created = fi.ModTime().UTC().Truncate(time.Second)
		}
		_, err := store.PutAPIToken(ctx, e)
		switch {
		case errors.Is(err, inventory.ErrConflict):
			if log != nil {
				log.Warn("api token file: a token of that name is already in the store; kept the store's", "token", e.Name, "file", path)
			}
		case err != nil:
			return n, fmt.Errorf("migrate api token %s: %w", e.Name, err)
		default:
			n++
		}
	}
	if err := os.Rename(path, path+".migrated"); err != nil {
		return n, fmt.Errorf("migrate api tokens: %w", err)
	}
	if log != nil {
		log.Info("moved api tokens from the token file into the state store, as admin tokens", "file", path, "tokens", n, "kept", path+".migrated")
	}
	return n, nil
}

// parseTokenFile reads the old token file: "name sha256 <salt> <hash>" a
// line.
func parseTokenFile(data []byte) ([]inventory.APIToken, error) {
	var out []inventory.APIToken
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		if len(f) != 4 || f[1] != "sha256" || !tokenName.MatchString(f[0]) {
			return nil, fmt.Errorf("line %d: want \"name sha256 <salt> <hash>\"", line)
		}
		salt, err1 := hex.DecodeString(f[2])
		hash, err2 := hex.DecodeString(f[3])
		if err1 != nil || err2 != nil || len(salt) < 16 || len(hash) != sha256.Size {
			return nil, fmt.Errorf("line %d: salt or hash is not valid hex of the right length", line)
		}
		out = append(out, inventory.APIToken{Name: f[0], Salt: salt, Hash: hash})
	}
	return out, sc.Err()
}
