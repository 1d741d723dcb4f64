package dhcpopt

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEncode(t *testing.T) {
	tests := map[string]struct {
		key, value string
		want       []byte
		wantErr    string
	}{
		"ips by name":           {"tftp-server-address", "10.0.0.5, 10.0.0.6", []byte{10, 0, 0, 5, 10, 0, 0, 6}, ""},
		"ips by code":           {"150", "10.0.0.5", []byte{10, 0, 0, 5}, ""},
		"one ip":                {"broadcast-address", "10.0.0.255", []byte{10, 0, 0, 255}, ""},
		"one ip, given two":     {"broadcast-address", "10.0.0.1,10.0.0.2", nil, "want one IPv4 address"},
		"not an address":        {"time-servers", "ntp.example", nil, "not an IPv4 address"},
		"u8":                    {"default-ip-ttl", "64", []byte{64}, ""},
		"u8 too big":            {"default-ip-ttl", "300", nil, "whole number of 8 bits"},
		"u32":                   {"time-offset", "3600", []byte{0, 0, 0x0e, 0x10}, ""},
		"bool":                  {"ip-forwarding", "false", []byte{0}, ""},
		"bool, not one":         {"ip-forwarding", "no", nil, "true or false"},
		"text":                  {"tftp-server-name", "tftp.example", []byte("tftp.example"), ""},
		"domain search":         {"domain-search", "a.example, b", []byte{1, 'a', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0, 1, 'b', 0}, ""},
		"unknown code, text":    {"224", "rack-7", []byte("rack-7"), ""},
		"unknown code, hex":     {"224", "hex:01:02:ff", []byte{1, 2, 0xff}, ""},
		"unknown code, bad hex": {"224", "hex:zz", nil, "not hex"},
		"managed: router":       {"3", "10.0.0.1", nil, "set by metal from the network's gateway"},
		"managed: mtu":          {"26", "9000", nil, "the network's mtu"},
		"managed: routes":       {"121", "hex:00", nil, "the network's routes"},
		"unknown name":          {"ntp", "10.0.0.1", nil, "unknown option"},
		"code out of range":     {"255", "x", nil, "want 1-254"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d, err := Lookup(tc.key)
			var got []byte
			if err == nil {
				got, err = Encode(d, tc.value)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestEncodeRoutes: RFC 3442's own examples.
func TestEncodeRoutes(t *testing.T) {
	got := EncodeRoutes([]Route{
		{netip.MustParsePrefix("10.17.0.0/16"), netip.MustParseAddr("10.0.0.1")},
		{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("10.0.0.2")},
		{netip.MustParsePrefix("10.27.129.0/24"), netip.MustParseAddr("10.0.0.3")},
	})
	want := []byte{16, 10, 17, 10, 0, 0, 1, 0, 10, 0, 0, 2, 24, 10, 27, 129, 10, 0, 0, 3}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
