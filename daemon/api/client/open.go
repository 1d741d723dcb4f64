package client

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/inventory/bolt"
)

// OpenStore opens the state store at url, explaining the usual failure: a
// running `metal serve` holds an embedded store's file.
func OpenStore(ctx context.Context, url string, log *slog.Logger) (inventory.Store, error) {
	s, err := backend.Open(ctx, url, backend.Options{Logger: log})
	if errors.Is(err, bolt.ErrLocked) {
		return nil, fmt.Errorf("%w\n"+
			"A running `metal serve` holds the embedded store while it runs. Stop it, then run this\n"+
			"again; or keep the site's state in etcd (state = \"etcd://HOST:2379/PREFIX\"), which\n"+
			"metal serve and these verbs can use at once", err)
	}
	return s, err
}

// Open opens the state store at url, or, when a running metal serve holds
// it (an embedded store is held by one process), a client of that daemon:
// exactly one of the two is set on success.
func Open(ctx context.Context, url string, log *slog.Logger) (inventory.Store, *Client, error) {
	s, err := OpenStore(ctx, url, log)
	if errors.Is(err, bolt.ErrLocked) {
		if c, ok := Beside(url); ok {
			return nil, c, nil
		}
	}
	return s, nil, err
}

// Reader is what the read verbs read the store at url through: the store
// itself, showing machines as the API shows them (api.Redact), or the
// daemon that holds it.
func Reader(ctx context.Context, url string, log *slog.Logger) (inventory.Reader, error) {
	s, c, err := Open(ctx, url, log)
	switch {
	case err != nil:
		return nil, err
	case c != nil:
		return c, nil
	}
	return redacted{inventory.ReaderOf(s)}, nil
}

// redacted shows machines read straight from the store as the API shows
// them: no boot token, task secret or user data, and nothing computed from
// a sensitive variable.
type redacted struct{ inventory.Reader }

func (r redacted) Machines(ctx context.Context) ([]inventory.Machine, error) {
	ms, err := r.Reader.Machines(ctx)
	for i := range ms {
		ms[i] = api.Redact(ms[i])
	}
	return ms, err
}

func (r redacted) Machine(ctx context.Context, ref string) (inventory.Machine, error) {
	m, err := r.Reader.Machine(ctx, ref)
	return api.Redact(m), err
}

// TokenAdmin manages the tokens of the store at url: in the store itself,
// or through the daemon that holds it. The token file of an older metal
// beside an embedded store is moved into the store first. Call done when
// finished.
func TokenAdmin(ctx context.Context, url string, log *slog.Logger) (admin api.TokenAdmin, done func(), err error) {
	s, c, err := Open(ctx, url, log)
	switch {
	case err != nil:
		return nil, nil, err
	case c != nil:
		return c.Tokens(daemon.LocalTokensPath), func() {}, nil
	}
	if p, ok := strings.CutPrefix(url, "file://"); ok {
		if _, err := api.MigrateTokenFile(ctx, s, filepath.Join(filepath.Dir(p), api.TokenFile), log); err != nil {
			s.Close()
			return nil, nil, err
		}
	}
	return api.NewTokens(s, nil, log), func() { s.Close() }, nil
}

// Machines reads the machines the store at url holds, through the daemon
// that holds it if one does. A file store that does not exist yet holds
// none, and is not created.
func Machines(ctx context.Context, url string, log *slog.Logger) ([]inventory.Machine, error) {
	if p, ok := strings.CutPrefix(url, "file://"); ok {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
	}
	s, c, err := Open(ctx, url, log)
	switch {
	case err != nil:
		return nil, err
	case c != nil:
		return c.Machines(ctx)
	}
	defer s.Close()
	machines, _, err := s.Machines(ctx)
	if err != nil {
		return nil, fmt.Errorf("read machines from the state store: %w", err)
	}
	return machines, nil
}
