package api

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// TokenVerifier says whose a bearer token is. *Tokens is the one metal
// uses; the console shares it so one token logs in to both.
type TokenVerifier interface {
	// Verify returns the name of the token secret, or false when no
	// token matches.
	Verify(secret string) (name string, ok bool)
}

// TokenFile is the name of the token file in the state directory.
const TokenFile = "api-tokens"

// tokenPrefix marks metal's API tokens, so a leaked one is recognisable
// (secret scanners, logs).
const tokenPrefix = "metal_"

// Tokens is a file of API tokens, one a line: "name sha256 <salt> <hash>",
// the hash being SHA-256 of the salt followed by the secret. Secrets are
// 32 random bytes, so a salted fast hash is enough: there is nothing to
// guess a dictionary from, and the salt keeps equal secrets apart. The
// file is read again when it changes, so tokens added by `metal token
// create` work without a restart.
type Tokens struct {
	path string

	mu      sync.Mutex
	modTime time.Time
	size    int64
	entries []tokenEntry
	err     error
}

type tokenEntry struct {
	name       string
	salt, hash []byte
}

// OpenTokens returns the tokens kept at path. A missing file is no
// tokens (every request needing one is refused), not an error.
func OpenTokens(path string) *Tokens { return &Tokens{path: path} }

// Path is where the tokens are kept.
func (t *Tokens) Path() string { return t.path }

// Verify implements TokenVerifier. Every entry is compared in constant
// time, so timing tells nothing about which prefix matched.
func (t *Tokens) Verify(secret string) (string, bool) {
	entries, err := t.load()
	if err != nil || !strings.HasPrefix(secret, tokenPrefix) {
		return "", false
	}
	name, found := "", false
	for _, e := range entries {
		sum := sha256.Sum256(append(append([]byte(nil), e.salt...), secret...))
		if subtle.ConstantTimeCompare(sum[:], e.hash) == 1 && !found {
			name, found = e.name, true
		}
	}
	return name, found
}

// Names lists the token names, for `metal token list`.
func (t *Tokens) Names() ([]string, error) {
	entries, err := t.load()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.name
	}
	return out, nil
}

// load returns the entries, reading the file again when its size or time
// changed.
func (t *Tokens) load() ([]tokenEntry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fi, err := os.Stat(t.path)
	if errors.Is(err, fs.ErrNotExist) {
		t.entries, t.err, t.modTime, t.size = nil, nil, time.Time{}, 0
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("api tokens: %w", err)
	}
	if fi.ModTime().Equal(t.modTime) && fi.Size() == t.size && (t.entries != nil || t.err != nil) {
		return t.entries, t.err
	}
	data, err := os.ReadFile(t.path)
	if err != nil {
		return nil, fmt.Errorf("api tokens: %w", err)
	}
	t.entries, t.err = parseTokens(data)
	if t.err != nil {
		t.err = fmt.Errorf("api tokens %s: %w", t.path, t.err)
	}
	if t.entries == nil {
		t.entries = []tokenEntry{}
	}
	t.modTime, t.size = fi.ModTime(), fi.Size()
	return t.entries, t.err
}

var tokenName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

func parseTokens(data []byte) ([]tokenEntry, error) {
	var out []tokenEntry
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
		out = append(out, tokenEntry{name: f[0], salt: salt, hash: hash})
	}
	return out, sc.Err()
}

// AddToken creates a token called name in the file at path (created with
// mode 0600 if missing) and returns its secret, which is shown once and
// never stored.
func AddToken(path, name string) (string, error) {
	if !tokenName.MatchString(name) {
		return "", fmt.Errorf("token name %q: use letters, digits, '.', '_', '@' or '-', at most 64", name)
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("api tokens: %w", err)
	}
	entries, err := parseTokens(old)
	if err != nil {
		return "", fmt.Errorf("api tokens %s: %w", path, err)
	}
	for _, e := range entries {
		if e.name == name {
			return "", fmt.Errorf("token %q already exists in %s: pick another name or remove its line", name, path)
		}
	}
	raw := make([]byte, 32)
	salt := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	secret := tokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256(append(append([]byte(nil), salt...), secret...))
	var buf bytes.Buffer
	if len(old) == 0 {
		buf.WriteString("# metal API tokens: name sha256 <salt> <sha256(salt+secret)>. Secrets are not stored.\n")
	} else {
		buf.Write(old)
		if !bytes.HasSuffix(old, []byte("\n")) {
			buf.WriteByte('\n')
		}
	}
	fmt.Fprintf(&buf, "%s sha256 %s %s\n", name, hex.EncodeToString(salt), hex.EncodeToString(sum[:]))
	if err := writeFileAtomic(path, buf.Bytes()); err != nil {
		return "", err
	}
	return secret, nil
}

// writeFileAtomic replaces path with data (mode 0600) so a reader sees the
// old file or the new one, never half of one.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("api tokens: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tokens-*")
	if err != nil {
		return fmt.Errorf("api tokens: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("api tokens: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("api tokens: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("api tokens: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("api tokens: %w", err)
	}
	return nil
}
