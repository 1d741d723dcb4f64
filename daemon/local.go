package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/internal/httpserve"
)

// LocalConsolePath is where the local socket serves a machine's serial
// console: the API's console WebSocket (api.Console), from the same hub
// as the browser terminals, so that `metal lab console` and a browser
// watch one stream. It is interactive: whoever can open the socket is the
// daemon's own user.
const LocalConsolePath = "/local/v1/machines/{name}/console"

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
	mux.Handle("/", api.New(api.Options{Store: d.Store, Planner: d.operator, ConsoleLog: d.consoleLogFunc(), Tokens: tokens, OpenReads: true, Logger: d.log}))
	d.localApplyHandlers(ctx, mux)
	mux.HandleFunc("GET "+LocalConsolePath, d.localConsole)
	admin := api.TokensHandler(tokens, LocalTokensPath)
	mux.Handle(LocalTokensPath, admin)
	mux.Handle(LocalTokensPath+"/", admin)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnContext:       localPeer,
	}
	if err := httpserve.Serve(ctx, srv, 2*time.Second, func() error { return srv.Serve(ln) }); err != nil {
		return fmt.Errorf("local API socket: %w", err)
	}
	os.Remove(path)
	return nil
}

// localConsole joins the local user to a machine's serial console.
func (d *Daemon) localConsole(w http.ResponseWriter, r *http.Request) {
	if d.consoles == nil {
		http.Error(w, "this metal serve knows no serial consoles: no --console-socket, and no machine's BMC speaks IPMI", http.StatusNotFound)
		return
	}
	who, _ := r.Context().Value(peerKey{}).(string)
	if who == "" {
		who = "a local user"
	}
	api.SerialConsole{Hub: d.consoles, Store: d.Store, Logger: d.log}.Serve(w, r, r.PathValue("name"), who, true)
}

type peerKey struct{}

// localPeer names the user at the other end of a local socket connection
// (SO_PEERCRED), so that a console session's events say who typed.
func localPeer(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	_ = raw.Control(func(fd uintptr) {
		cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if cred == nil {
		return ctx
	}
	name := "uid " + strconv.Itoa(int(cred.Uid))
	if u, err := user.LookupId(strconv.Itoa(int(cred.Uid))); err == nil {
		name = u.Username
	}
	return context.WithValue(ctx, peerKey{}, name+" on the local socket")
}
