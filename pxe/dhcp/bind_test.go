package dhcp

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestListenRetrying: a port released a moment later is bound once it is
// free; a port another server keeps is refused (EADDRINUSE) once
// bindRetryFor is spent, as a second server on one interface must be.
// On loopback, at a port of the kernel's choosing.
func TestListenRetrying(t *testing.T) {
	t.Parallel()
	hold := func(t *testing.T) (net.PacketConn, int) {
		t.Helper()
		c, err := listen(context.Background(), "lo", 0, false)
		if err != nil {
			t.Skipf("cannot bind a UDP socket to lo here: %v", err)
		}
		return c, c.LocalAddr().(*net.UDPAddr).Port
	}
	t.Run("released", func(t *testing.T) {
		t.Parallel()
		held, port := hold(t)
		go func() { time.Sleep(200 * time.Millisecond); held.Close() }()
		c, err := listenRetrying(context.Background(), "lo", port)
		if err != nil {
			t.Fatalf("listenRetrying after the holder closed: %v", err)
		}
		c.Close()
	})
	t.Run("kept", func(t *testing.T) {
		t.Parallel()
		held, port := hold(t)
		defer held.Close()
		c, err := listenRetrying(context.Background(), "lo", port)
		if err == nil {
			c.Close()
			t.Fatal("a second socket bound a port another one keeps")
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("err = %v, want EADDRINUSE", err)
		}
	})
}
