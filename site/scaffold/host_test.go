package scaffold

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
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

// TestComplete: the typed answers parsed, the defaults filled in, and each
// malformed one named.
func TestComplete(t *testing.T) {
	host := map[string][]netip.Prefix{"eno1": {netip.MustParsePrefix("192.0.2.5/24")}}
	a := netip.MustParseAddr
	tests := map[string]struct {
		in      Inputs
		want    Options
		wantErr string
	}{
		"defaults": {in: Inputs{Subnet: "192.0.2.9/24"},
			want: Options{Interface: "eno1", Subnet: netip.MustParsePrefix("192.0.2.0/24"), ServerIP: a("192.0.2.5"), Gateway: a("192.0.2.5")}},
		"given": {in: Inputs{Subnet: "192.0.2.0/24", Gateway: "192.0.2.1", DNS: []string{"192.0.2.53"}, Pool: "192.0.2.100-192.0.2.150", Scan: true, BMCSubnet: "198.51.100.0/24"},
			want: Options{Interface: "eno1", Subnet: netip.MustParsePrefix("192.0.2.0/24"), ServerIP: a("192.0.2.5"), Gateway: a("192.0.2.1"),
				DNS: []netip.Addr{a("192.0.2.53")}, PoolStart: a("192.0.2.100"), PoolEnd: a("192.0.2.150"), BMCSubnet: netip.MustParsePrefix("198.51.100.0/24")}},
		"scan the boot subnet": {in: Inputs{Subnet: "192.0.2.0/24", Scan: true},
			want: Options{Interface: "eno1", Subnet: netip.MustParsePrefix("192.0.2.0/24"), ServerIP: a("192.0.2.5"), Gateway: a("192.0.2.5"), BMCSubnet: netip.MustParsePrefix("192.0.2.0/24")}},
		"subnet":     {in: Inputs{Subnet: "192.0.2.0"}, wantErr: `--subnet "192.0.2.0"`},
		"gateway":    {in: Inputs{Subnet: "192.0.2.0/24", Gateway: "x"}, wantErr: `--gateway "x"`},
		"dns":        {in: Inputs{Subnet: "192.0.2.0/24", DNS: []string{"x"}}, wantErr: `--dns "x"`},
		"pool":       {in: Inputs{Subnet: "192.0.2.0/24", Pool: "x"}, wantErr: `--pool "x"`},
		"bmc subnet": {in: Inputs{Subnet: "192.0.2.0/24", BMCSubnet: "x"}, wantErr: `--bmc-subnet "x"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			o := Options{State: "file://s.db"}
			err := o.Complete(tc.in, host)
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %s...", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.want.State = "file://s.db"
			if d := cmp.Diff(tc.want, o, cmp.Comparer(func(x, y netip.Addr) bool { return x == y }), cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); d != "" {
				t.Errorf("options (-want +got):\n%s", d)
			}
		})
	}
}
