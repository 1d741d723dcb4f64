package daemon

import (
	"slices"
	"strings"
	"testing"
)

// TestAgentCmdline: an agent that reaches metal over IPv4 boots with IPv6
// off (nothing of the kernel's own transmits beside it); one reached over
// IPv6, or by name, keeps it. Every agent restarts on a kernel lockup.
func TestAgentCmdline(t *testing.T) {
	for name, tc := range map[string]struct {
		base   string
		noIPv6 bool
	}{
		"ipv4":        {"http://192.0.2.1:8080", true},
		"ipv6":        {"http://[2001:db8::1]:8080", false},
		"ipv4-mapped": {"http://[::ffff:192.0.2.1]:8080", true},
		"name":        {"http://metal.example:8080", false},
	} {
		t.Run(name, func(t *testing.T) {
			d := &Daemon{BaseURL: tc.base}
			got := d.agentBoot(AgentOptions{Cmdline: "extra=1"}).Cmdline
			args := strings.Fields(got)
			has := func(a string) bool { return slices.Contains(args, a) }
			if has("ipv6.disable=1") != tc.noIPv6 {
				t.Errorf("cmdline %q: ipv6.disable=1 present %v, want %v", got, !tc.noIPv6, tc.noIPv6)
			}
			for _, want := range []string{"softlockup_panic=1", "panic=10", "metal.url=" + tc.base, "extra=1"} {
				if !has(want) {
					t.Errorf("cmdline %q lacks %s", got, want)
				}
			}
		})
	}
}
