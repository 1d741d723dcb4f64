package httpserve

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestServeUntilCancel: a request in flight when ctx ends finishes, and
// Serve returns nil once the server is down.
func TestServeUntilCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	inFlight := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(inFlight)
		time.Sleep(200 * time.Millisecond)
		io.WriteString(w, "finished")
	})}
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, srv, 5*time.Second, func() error { return srv.Serve(ln) }) }()
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String())
		if err != nil {
			got <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- string(b)
	}()
	<-inFlight
	cancel()
	if s := <-got; s != "finished" {
		t.Errorf("request in flight at shutdown got %q, want finished", s)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve after cancel: %v, want nil", err)
	}
}

// TestServeFails: when serve stops by itself, its error is returned.
func TestServeFails(t *testing.T) {
	boom := errors.New("boom")
	err := Serve(context.Background(), &http.Server{}, time.Second, func() error { return boom })
	if !errors.Is(err, boom) {
		t.Errorf("Serve: %v, want boom", err)
	}
}
