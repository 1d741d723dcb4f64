package pxetest_test

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/pxe/pxetest"
)

// TestLab checks that a client namespace reaches the lab namespace over the
// bridge, that Do really runs in the namespace, and that cleanup removes
// every namespace.
func TestLab(t *testing.T) {
	var names []string
	t.Run("lab", func(t *testing.T) {
		lab := pxetest.NewLab(t)
		mac := pxetest.MAC(7)
		h := lab.AddHost("c1", mac)
		names = append(names, lab.NS().Name, h.Name)
		h.MustIP("addr", "add", "192.0.2.50/24", "dev", "eth0")

		out, err := h.IP("link", "show", "eth0")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), mac.String()) {
			t.Errorf("eth0 has not the MAC %s:\n%s", mac, out)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if out, err := h.Command(ctx, "ping", "-c", "1", "-W", "2", pxetest.ServerIP.String()).CombinedOutput(); err != nil {
			t.Fatalf("ping from client to lab: %v\n%s", err, out)
		}

		// A socket opened in Do lives in the lab namespace: it can bind
		// ServerIP, which the root namespace does not have.
		err = lab.NS().Do(func() error {
			c, err := net.ListenPacket("udp4", pxetest.ServerIP.String()+":0")
			if err != nil {
				return err
			}
			return c.Close()
		})
		if err != nil {
			t.Fatalf("listen on the server address inside the lab: %v", err)
		}

		p := h.Start("sleep", "60")
		p.Stop()
		select {
		case <-p.Done():
		default:
			t.Error("process still running after Stop")
		}
	})
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s left behind:\n%s", n, out)
		}
	}
}
