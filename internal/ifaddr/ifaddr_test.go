package ifaddr_test

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/internal/ifaddr"
	"github.com/metal-dev/metal/pxe/pxetest"
)

// TestChooseOnRealInterfaces adds addresses to a veth in a namespace, in
// different orders and with different flags, and checks which one
// Choose picks from what List reads back from the kernel. The veth's
// peer stays down: without carrier, an address added without nodad
// stays tentative.
func TestChooseOnRealInterfaces(t *testing.T) {
	v6 := netip.MustParsePrefix("2001:db8:1::/64")
	v4 := netip.MustParsePrefix("192.0.2.0/24")
	tests := map[string]struct {
		// adds are `ip addr add` arguments before "dev", added in order,
		// each some time after the last (the kernel stamps addresses in
		// hundredths of a second).
		adds   []string
		subnet netip.Prefix
		pin    string
		want   string // "" for none
	}{
		"the oldest, though listed last": {
			adds: []string{"2001:db8:1::10/64 nodad", "2001:db8:1::5/64 nodad"}, subnet: v6, want: "2001:db8:1::10",
		},
		"the oldest, other order": {
			adds: []string{"2001:db8:1::5/64 nodad", "2001:db8:1::10/64 nodad"}, subnet: v6, want: "2001:db8:1::5",
		},
		"a deprecated address passed over": {
			adds: []string{"2001:db8:1::10/64 nodad preferred_lft 0", "2001:db8:1::20/64 nodad"}, subnet: v6, want: "2001:db8:1::20",
		},
		"a tentative address passed over": {
			adds: []string{"2001:db8:1::10/64", "2001:db8:1::20/64 nodad"}, subnet: v6, want: "2001:db8:1::20",
		},
		"a tentative address when it is the only one": {
			adds: []string{"2001:db8:1::10/64"}, subnet: v6, want: "2001:db8:1::10",
		},
		"a permanent address over an older dynamic one": {
			adds: []string{"2001:db8:1::5/64 nodad valid_lft 3600 preferred_lft 3600", "2001:db8:1::10/64 nodad"}, subnet: v6, want: "2001:db8:1::10",
		},
		"the pinned address": {
			adds: []string{"2001:db8:1::10/64 nodad", "2001:db8:1::20/64 nodad"}, subnet: v6, pin: "2001:db8:1::20", want: "2001:db8:1::20",
		},
		"a pin the interface lacks": {
			adds: []string{"2001:db8:1::10/64 nodad", "2001:db8:1::20/64 nodad"}, subnet: v6, pin: "2001:db8:1::99", want: "2001:db8:1::10",
		},
		"another subnet's address ignored": {
			adds: []string{"2001:db8:2::1/64 nodad", "2001:db8:1::10/64 nodad"}, subnet: v6, want: "2001:db8:1::10",
		},
		"none in the subnet": {
			adds: []string{"2001:db8:2::1/64 nodad"}, subnet: v6,
		},
		"IPv4: the primary over a lower secondary": {
			adds: []string{"192.0.2.10/24", "192.0.2.5/24"}, subnet: v4, want: "192.0.2.10",
		},
	}
	lab := pxetest.NewLab(t)
	ns := lab.NS()
	i := 0
	for name, tc := range tests {
		i++
		dev := fmt.Sprintf("a%d", i)
		t.Run(name, func(t *testing.T) {
			ns.MustIP("link", "add", dev, "type", "veth", "peer", "name", "b"+dev[1:])
			ns.MustIP("link", "set", dev, "up")
			for _, a := range tc.adds {
				time.Sleep(30 * time.Millisecond)
				args := strings.Fields(a)
				ns.MustIP(append([]string{"addr", "add", args[0], "dev", dev}, args[1:]...)...)
			}
			var addrs []ifaddr.Addr
			if err := ns.Do(func() (err error) {
				addrs, err = ifaddr.List(dev)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			var pin netip.Addr
			if tc.pin != "" {
				pin = netip.MustParseAddr(tc.pin)
			}
			got, err := ifaddr.Choose(addrs, tc.subnet, pin)
			switch {
			case tc.want == "" && !errors.Is(err, ifaddr.ErrNone):
				t.Errorf("chose %s (%v), want none", got.Prefix, err)
			case tc.want != "" && (err != nil || got.Addr().String() != tc.want):
				t.Errorf("chose %s (%v), want %s", got.Prefix, err, tc.want)
			}
			if t.Failed() {
				for _, a := range addrs {
					t.Logf("listed: %s [%s] created %s", a.Prefix, a.FlagString(), a.Created)
				}
			}
		})
	}
}
