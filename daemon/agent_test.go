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

// TestAgentCmdline6: beside IPv4 networks, the machines of IPv6-only
// ones get a command line of their own, with metal's IPv6 URL and IPv6
// on; a site without IPv6 links gets none.
func TestAgentCmdline6(t *testing.T) {
	d := &Daemon{BaseURL: "http://192.0.2.1:8080", baseURL6: "http://[2001:db8::1]:8080"}
	ab := d.agentBoot(AgentOptions{})
	if args := strings.Fields(ab.Cmdline6); !slices.Contains(args, "metal.url=http://[2001:db8::1]:8080") || slices.Contains(args, "ipv6.disable=1") {
		t.Errorf("Cmdline6 %q: want metal's IPv6 URL and IPv6 on", ab.Cmdline6)
	}
	if !strings.Contains(ab.Cmdline, "metal.url=http://192.0.2.1:8080") {
		t.Errorf("Cmdline %q: want metal's IPv4 URL", ab.Cmdline)
	}
	if ab := (&Daemon{BaseURL: "http://192.0.2.1:8080"}).agentBoot(AgentOptions{}); ab.Cmdline6 != "" {
		t.Errorf("Cmdline6 %q without IPv6 links", ab.Cmdline6)
	}
}
