package scaffold

import (
	"net/netip"
	"testing"
)

func TestLocate(t *testing.T) {
	host := map[string][]netip.Prefix{
		"eno1": {netip.MustParsePrefix("192.0.2.5/24")},
		"eno2": {netip.MustParsePrefix("198.51.100.7/25")},
	}
	tests := map[string]struct {
		iface, subnet string
		want          Options
		wantErr       bool
	}{
		"interface":      {iface: "eno2", want: Options{Interface: "eno2", Subnet: netip.MustParsePrefix("198.51.100.0/25"), ServerIP: netip.MustParseAddr("198.51.100.7")}},
		"subnet":         {subnet: "192.0.2.0/24", want: Options{Interface: "eno1", Subnet: netip.MustParsePrefix("192.0.2.0/24"), ServerIP: netip.MustParseAddr("192.0.2.5")}},
		"both":           {iface: "eno1", subnet: "192.0.2.0/24", want: Options{Interface: "eno1", Subnet: netip.MustParsePrefix("192.0.2.0/24"), ServerIP: netip.MustParseAddr("192.0.2.5")}},
		"no address":     {iface: "eno9", wantErr: true},
		"foreign subnet": {subnet: "203.0.113.0/24", wantErr: true},
		"neither":        {wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			o := Options{Interface: tc.iface}
			if tc.subnet != "" {
				o.Subnet = netip.MustParsePrefix(tc.subnet)
			}
			err := o.Locate(host)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && (o.Interface != tc.want.Interface || o.Subnet != tc.want.Subnet || o.ServerIP != tc.want.ServerIP) {
				t.Errorf("got %s %s %s, want %s %s %s", o.Interface, o.Subnet, o.ServerIP, tc.want.Interface, tc.want.Subnet, tc.want.ServerIP)
			}
		})
	}
}

func TestParsePool(t *testing.T) {
	if s, e, err := ParsePool("192.0.2.100-192.0.2.199"); err != nil || s != netip.MustParseAddr("192.0.2.100") || e != netip.MustParseAddr("192.0.2.199") {
		t.Errorf("ParsePool: %s %s %v", s, e, err)
	}
	for _, bad := range []string{"192.0.2.100", "192.0.2.100-x", "-"} {
		if _, _, err := ParsePool(bad); err == nil {
			t.Errorf("ParsePool(%q): no error", bad)
		}
	}
}
