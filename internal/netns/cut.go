package netns

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// CutLoopbackTCP black-holes, inside namespace name, the path from
// 127.0.0.1 to TCP port on 127.0.0.1 with nftables (Debian nftables):
// its packets and the answers are dropped, the server behind the port
// alive, as on a cut link (the client waits out its timeouts rather than
// being refused). A peer on another loopback address (127.0.0.2, a
// second address of the server) still gets through. heal deletes the
// rules again.
func CutLoopbackTCP(ctx context.Context, name string, port int) (heal func() error, err error) {
	table := fmt.Sprintf("metal_cut_%d", port)
	rules := fmt.Sprintf(`table inet %s {
  chain out {
    type filter hook output priority 0; policy accept;
    ip saddr 127.0.0.1 ip daddr 127.0.0.1 tcp dport %[2]d drop
    ip saddr 127.0.0.1 ip daddr 127.0.0.1 tcp sport %[2]d drop
  }
}
`, table, port)
	nft := exec.CommandContext(ctx, "ip", "netns", "exec", name, "nft", "-f", "-")
	nft.Stdin = strings.NewReader(rules)
	if out, err := nft.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nft (Debian nftables) in %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return func() error {
		out, err := exec.Command("ip", "netns", "exec", name, "nft", "delete", "table", "inet", table).CombinedOutput()
		if err != nil {
			return fmt.Errorf("nft delete table %s in %s: %w: %s", table, name, err, strings.TrimSpace(string(out)))
		}
		return nil
	}, nil
}
