package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/internal/httpserve"
)

// LocalTokensPath is where the local socket serves token administration
// (api.TokensHandler) for `metal token` while the daemon holds the store.
const LocalTokensPath = "/local/v1/tokens"

// LocalSocket is the name, in the state directory, of the Unix socket on
// which a running daemon answers the read-only API for local commands
// (`metal machines`, `metal events`, `metal lab status`) while it holds the
// embedded store, and takes the applies `metal apply` submits to it
// (LocalApplyPath), and manages API tokens (LocalTokensPath). Who may open the socket is decided by its file mode
// (0600, the daemon's user): reads and submitted applies need no token
// there; the console's actions still do.
const LocalSocket = "api.sock"

// serveLocal answers the API on the state directory's socket until ctx
// ends.
func (d *Daemon) serveLocal(ctx context.Context, tokens api.TokenVerifier) error {
	path := filepath.Join(d.StateDir, LocalSocket)
	// A socket left by a daemon that died is stale: nothing answers it.
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("local API socket %s: another metal serve answers on it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("local API socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("local API socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("local API socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", api.New(api.Options{Store: d.Store, Planner: d.operator, Tokens: tokens, OpenReads: true, Logger: d.log}))
	d.localApplyHandlers(ctx, mux)
	admin := api.TokensHandler(tokens, LocalTokensPath)
	mux.Handle(LocalTokensPath, admin)
	mux.Handle(LocalTokensPath+"/", admin)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	if err := httpserve.Serve(ctx, srv, 2*time.Second, func() error { return srv.Serve(ln) }); err != nil {
		return fmt.Errorf("local API socket: %w", err)
	}
	os.Remove(path)
	return nil
}
