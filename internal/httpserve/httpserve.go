// Package httpserve runs an http.Server for as long as a context lasts:
// what metal's boot, API and local-socket listeners share.
package httpserve

import (
	"context"
	"net/http"
	"time"
)

// Serve calls serve (srv.Serve or srv.ServeTLS on its listener) until ctx
// ends; then it shuts srv down, letting requests in flight finish for up
// to grace before closing them. The error is serve's, when it stopped by
// itself; nil after ctx ended.
func Serve(ctx context.Context, srv *http.Server, grace time.Duration, serve func() error) error {
	done := make(chan error, 1)
	go func() { done <- serve() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		srv.Close()
	}
	<-done
	return nil
}
