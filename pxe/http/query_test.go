package http

import (
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestQueryValueIsQueryGet: the script handler reads its token with
// queryValue, which must answer as url.Query().Get does.
func TestQueryValueIsQueryGet(t *testing.T) {
	queries := map[string]string{
		"none":              "",
		"token":             "token=abc",
		"second":            "a=1&token=abc",
		"first of two":      "token=one&token=two",
		"empty":             "token=",
		"no value":          "token",
		"escaped":           "token=a%2Fb+c",
		"escaped key":       "%74oken=abc",
		"bad escape":        "token=%zz&token=ok",
		"bad key escape":    "%zz=1&token=ok",
		"semicolon":         "token=a;b&token=ok",
		"semicolon only":    "a=1;token=abc",
		"empty pairs":       "&&token=abc&",
		"prefix of the key": "tokens=x&token2=y",
		"long":              strings.Repeat("a=1&", 300) + "token=abc",
		"too many":          strings.Repeat("&", 20000) + "token=abc",
	}
	for name, q := range queries {
		u := &url.URL{RawQuery: q}
		if diff := cmp.Diff(u.Query().Get("token"), queryValue(q, "token")); diff != "" {
			t.Errorf("%s: %q (-Query().Get +queryValue):\n%s", name, q, diff)
		}
	}
}

func TestSameIP(t *testing.T) {
	tests := map[string]struct {
		ip     net.IP
		remote string
		want   bool
	}{
		"ipv4":                {net.ParseIP("192.0.2.9"), "192.0.2.9:1234", true},
		"ipv4, 4-byte form":   {net.IPv4(192, 0, 2, 9).To4(), "192.0.2.9:1234", true},
		"another address":     {net.ParseIP("192.0.2.9"), "192.0.2.10:1234", false},
		"ipv4-mapped remote":  {net.ParseIP("192.0.2.9"), "[::ffff:192.0.2.9]:1234", true},
		"ipv6":                {net.ParseIP("2001:db8::9"), "[2001:db8::9]:80", true},
		"no port":             {net.ParseIP("192.0.2.9"), "192.0.2.9", false},
		"no leased address":   {nil, "192.0.2.9:1234", false},
		"a zone never equals": {net.ParseIP("fe80::1"), "[fe80::1%eth0]:80", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			remote, _ := netip.ParseAddrPort(tc.remote)
			if got := sameIP(tc.ip, remote.Addr()); got != tc.want {
				t.Errorf("sameIP(%v, %q) = %v, want %v", tc.ip, tc.remote, got, tc.want)
			}
		})
	}
}
