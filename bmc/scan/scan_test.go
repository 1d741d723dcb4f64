package scan_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/bmc/ipmisim"
	"github.com/metal-dev/metal/bmc/scan"
)

func TestHosts(t *testing.T) {
	tests := map[string]struct {
		prefix      string
		first, last string
		n           int
		err         string
	}{
		"a /24 without network and broadcast": {prefix: "192.0.2.0/24", first: "192.0.2.1", last: "192.0.2.254", n: 254},
		"a /32 is its address":                {prefix: "127.0.0.1/32", first: "127.0.0.1", last: "127.0.0.1", n: 1},
		"an unmasked prefix":                  {prefix: "192.0.2.77/30", first: "192.0.2.77", last: "192.0.2.78", n: 2},
		"too large":                           {prefix: "10.0.0.0/16", err: "more than the 4096"},
		"IPv6":                                {prefix: "2001:db8::/120", err: "only IPv4"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := scan.Hosts(netip.MustParsePrefix(tc.prefix))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Hosts: %v, want an error saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.n || got[0].String() != tc.first || got[len(got)-1].String() != tc.last {
				t.Errorf("Hosts(%s) = %d addresses %v..%v, want %d %s..%s", tc.prefix, len(got), got[0], got[len(got)-1], tc.n, tc.first, tc.last)
			}
		})
	}
}

// TestScan finds a Redfish service (a service root on loopback) and a
// real IPMI BMC (OpenIPMI's ipmi_sim answering the RMCP presence ping),
// and nothing where nothing answers.
func TestScan(t *testing.T) {
	redfish := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/redfish/v1/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"@odata.id": "/redfish/v1/", "RedfishVersion": "1.11.0", "Vendor": "Example", "Product": "BMC 9000"}`)
	}))
	defer redfish.Close()
	_, rfPort, _ := net.SplitHostPort(redfish.Listener.Addr().String())

	if _, err := exec.LookPath("ipmi_sim"); err != nil {
		t.Fatal("this test needs ipmi_sim: install the Debian package openipmi (apt-get install openipmi)")
	}
	files, err := ipmisim.Write(t.TempDir(), ipmisim.Config{Name: "scan", Address: "127.0.0.1:0",
		Username: "admin", Password: "scan-password", QEMU: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	sim, err := ipmisim.Start(t.Context(), files)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Stop()
	_, ipmiPort, _ := net.SplitHostPort(sim.Addr())
	var port int
	fmt.Sscan(ipmiPort, &port)

	opts := scan.Options{Redfish: []string{"http://%s:" + rfPort}, IPMIPort: port, Timeout: 2 * time.Second}
	got, err := scan.Scan(t.Context(), []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")}, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := []scan.Found{
		{Addr: netip.MustParseAddr("127.0.0.1"), Protocol: "redfish", Address: "http://127.0.0.1:" + rfPort, Product: "Example BMC 9000"},
		{Addr: netip.MustParseAddr("127.0.0.1"), Protocol: "ipmi", Address: "127.0.0.1:" + ipmiPort},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Scan (-want +got):\n%s", diff)
	}
}

func TestPresencePong(t *testing.T) {
	ping := scan.PresencePing(7)
	if len(ping) != 12 || ping[8] != 0x80 || ping[9] != 7 {
		t.Fatalf("ping % x", ping)
	}
	pong := append([]byte{0x06, 0x00, 0xff, 0x06, 0, 0, 0x11, 0xbe, 0x40, 7, 0, 16}, make([]byte, 16)...)
	if scan.IsPresencePong(pong, 7) {
		t.Error("a pong without the IPMI-supported bit was taken for a BMC")
	}
	pong[12+8] = 0x81
	if !scan.IsPresencePong(pong, 7) {
		t.Error("a pong from an IPMI entity was not recognised")
	}
	if scan.IsPresencePong(pong, 8) {
		t.Error("a pong to another ping's tag was taken")
	}
}
