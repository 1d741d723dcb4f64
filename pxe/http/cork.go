package http

import (
	"context"
	"net"
	nethttp "net/http"
	"syscall"

	"golang.org/x/sys/unix"
)

// A file body is corked (TCP_CORK, nginx's tcp_nopush) from the header to
// its last byte. net/http sets TCP_NODELAY on every connection, and
// sendfile(2) hands the socket the file a pipe's worth at a time: with
// NODELAY the kernel pushes the partial segment left at the end of each
// hand-over: a 1 GiB image left over loopback in 20,000 to 23,000 data
// segments, corked in 16,450 (as from nginx), and every extra segment
// costs both ends receive processing and ACKs. Corked, only full segments leave, the
// header shares the first one with the body, and uncorking at the end
// pushes the tail at once: nothing waits for the kernel's 200 ms cork
// timeout. Scripts, small and written in one go, are not corked. The
// script connections' own file answers get the same segments without the
// cork's two system calls: their header goes with MSG_MORE (sendWhole).

// connKey is the request context's key to its connection (connContext).
type connKey struct{}

// connContext is the http.Server's ConnContext: it gives each request of
// a TCP connection a way to its socket, under the replayConn the script
// connections hand net/http. Once per connection, not per request.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if rc, ok := c.(*replayConn); ok {
		c = rc.Conn
	}
	if tc, ok := c.(*net.TCPConn); ok {
		return context.WithValue(ctx, connKey{}, tc)
	}
	return ctx
}

// cork corks r's connection for a body about to be sent and returns what
// uncorks it; a request with no body to send (HEAD) or not over TCP is
// left alone. Failing to cork costs only segments, so it is not an error.
func cork(r *nethttp.Request) (uncork func()) {
	tc, ok := r.Context().Value(connKey{}).(*net.TCPConn)
	if !ok || r.Method != nethttp.MethodGet {
		return func() {}
	}
	if setCork(tc, 1) != nil {
		return func() {}
	}
	return func() { setCork(tc, 0) }
}

func setCork(tc *net.TCPConn, on int) error {
	return setsockoptInt(tc, unix.IPPROTO_TCP, unix.TCP_CORK, on)
}

// setsockoptInt sets an integer socket option on c's socket.
func setsockoptInt(c syscall.Conn, level, opt, value int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), level, opt, value)
	}); err != nil {
		return err
	}
	return serr
}
