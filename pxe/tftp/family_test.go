package tftp

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/pxe/pxetest"
)

// TestWindowedOverLink: windowsize works alike over IPv4 and IPv6 on a
// link of Ethernet's MTU (1500) between two namespaces, from one server
// on an address without a host, as metal serve runs it (one port, both
// families). atftp asks for windows of blocks as large as it likes; the
// server agrees to the windowsize and to the largest block that crosses
// the link unfragmented in the client's family: 1500 less 28 bytes of
// IPv4 and UDP headers, less 48 of IPv6 and UDP.
func TestWindowedOverLink(t *testing.T) {
	needTool(t, "atftp", "atftp")
	lab := pxetest.NewLab(t)
	lab.NS().MustIP("addr", "add", netip.PrefixFrom(pxetest.ServerIP6, 64).String(), "dev", pxetest.BridgeName, "nodad")
	client := lab.AddHost("client", nil)
	client.MustIP("addr", "add", "192.0.2.10/24", "dev", "eth0")
	client.MustIP("addr", "add", "2001:db8:0:1::10/64", "dev", "eth0", "nodad")

	// The bridge's link-local address, as the client reaches it: once
	// both ends are past duplicate address detection.
	lab.NS().WaitIPv6(pxetest.BridgeName)
	client.WaitIPv6("eth0")
	out, err := lab.NS().IP("-6", "-o", "addr", "show", "dev", pxetest.BridgeName, "scope", "link")
	mustT(t, err)
	f := strings.Fields(string(out))
	i := slices.Index(f, "inet6")
	if i < 0 || i+1 == len(f) {
		t.Fatalf("no link-local address on the bridge:\n%s", out)
	}
	linkLocal := netip.MustParsePrefix(f[i+1]).Addr().WithZone("eth0")

	want := patterned(3<<20 + 5)
	root := rootWith(t, "image", want)
	tests := map[string]struct {
		server          netip.Addr
		blksize, window int
		noGSO           bool
		wantBlksize     int
	}{
		"ipv4 1468 by 8":            {server: pxetest.ServerIP, blksize: 1468, window: 8, wantBlksize: 1468},
		"ipv4 past the MTU":         {server: pxetest.ServerIP, blksize: 8192, window: 16, wantBlksize: 1472},
		"ipv4 past the MTU, no gso": {server: pxetest.ServerIP, blksize: 8192, window: 16, noGSO: true, wantBlksize: 1472},
		"ipv6 1428 by 8":            {server: pxetest.ServerIP6, blksize: 1428, window: 8, wantBlksize: 1428},
		// What fits IPv4's MTU does not fit IPv6's.
		"ipv6 1468 by 8":            {server: pxetest.ServerIP6, blksize: 1468, window: 8, wantBlksize: 1452},
		"ipv6 past the MTU":         {server: pxetest.ServerIP6, blksize: 8192, window: 16, wantBlksize: 1452},
		"ipv6 past the MTU, no gso": {server: pxetest.ServerIP6, blksize: 8192, window: 16, noGSO: true, wantBlksize: 1452},
		"ipv6 512 by 64":            {server: pxetest.ServerIP6, blksize: 512, window: 64, wantBlksize: 512},
		"ipv6 window of 1":          {server: pxetest.ServerIP6, blksize: 1024, window: 1, wantBlksize: 1024},
		// Replies go out scoped to the interface the request came in on.
		"ipv6 link-local": {server: linkLocal, blksize: 1468, window: 8, wantBlksize: 1452},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			logs := &logBuffer{}
			srv, err := New(Config{Addr: ":69", Root: root, Logger: slogJSON(logs)})
			mustT(t, err)
			srv.noGSO = tc.noGSO
			serveUntilCleanup(t, logs, func(ctx context.Context) error {
				return lab.NS().Do(func() error { return srv.Serve(ctx) })
			})
			for len(logs.records("tftp serving")) < 2 {
				time.Sleep(time.Millisecond) // the IPv6 socket's loop
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			out := filepath.Join(t.TempDir(), "out")
			b, err := client.Command(ctx, "atftp", "--option", fmt.Sprintf("windowsize %d", tc.window),
				"--option", fmt.Sprintf("blksize %d", tc.blksize), "--option", "tsize",
				"-g", "-r", "image", "-l", out, tc.server.String(), "69").CombinedOutput()
			if err != nil {
				t.Fatalf("atftp: %v\n%s", err, b)
			}
			got, err := os.ReadFile(out)
			mustT(t, err)
			if !bytes.Equal(got, want) {
				t.Fatalf("fetched %d bytes, not identical to the %d served", len(got), len(want))
			}
			rec := logs.waitRecord(t, "tftp transfer", "image")
			opts := logs.waitRecord(t, "tftp transfer options", "image")
			client, _ := rec["client"].(string)
			ap, err := netip.ParseAddrPort(client)
			mustT(t, err)
			if diff := cmp.Diff(map[string]any{
				"result": "ok", "sender": "metal", "family": tc.server.Is6(),
				"blksize": strconv.Itoa(tc.wantBlksize), "windowsize": strconv.Itoa(tc.window),
			}, map[string]any{
				"result": rec["result"], "sender": opts["sender"], "family": ap.Addr().Is6(),
				"blksize": opts["blksize"], "windowsize": opts["windowsize"],
			}); diff != "" {
				t.Errorf("transfer (-want +got):\n%s", diff)
			}
		})
	}
}
