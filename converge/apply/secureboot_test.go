package apply_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/apply/applytest"
	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/storepolicy"
)

// TestSecureBootLearnedFromBMC: a machine whose site leaves secure_boot
// unset has its firmware's Secure Boot state read from its BMC's Redfish
// SecureBoot resource (the virtual BMC, through the real client) before
// it netboots; on, the netboot servers' policy gives it the signed chain,
// never iPXE; a BMC that says nothing, or a site that says secure_boot =
// false, leaves iPXE; on without a signed chain to serve fails the machine
// before it powers on.
func TestSecureBootLearnedFromBMC(t *testing.T) {
	t.Parallel()
	on, off := true, false
	for name, tc := range map[string]struct {
		bmc      map[string]bool // the BMC's SecureBoot resource, if any
		declare  string          // added to the machine block
		noChain  bool
		seen     *bool
		boot     pxe.BootPath
		failWith string
	}{
		"on":                       {bmc: map[string]bool{"m0000": true}, seen: &on, boot: pxe.BootSecure},
		"on, boot = http":          {bmc: map[string]bool{"m0000": true}, declare: `boot = "http"`, seen: &on, boot: pxe.BootSecure},
		"off":                      {bmc: map[string]bool{"m0000": false}, seen: &off, boot: pxe.BootIPXE},
		"no SecureBoot resource":   {boot: pxe.BootIPXE},
		"secure_boot = false":      {bmc: map[string]bool{"m0000": true}, declare: `secure_boot = false`, boot: pxe.BootIPXE},
		"on, no signed chain":      {bmc: map[string]bool{"m0000": true}, noChain: true, seen: &on, boot: pxe.BootSecure, failWith: "no signed boot chain"},
		"virtual media, not asked": {bmc: map[string]bool{"m0000": true}, declare: "boot = \"virtual-media\"\n  ip = \"192.0.2.60\"", boot: pxe.BootVirtualMedia, failWith: "boot CDs"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			l := newLabWith(t, applytest.Options{Machines: 1, RebootAfter: 5 * time.Millisecond, SecureBoot: tc.bmc})
			s := l.site("", func(src string) string {
				return strings.Replace(src, "image   = image.os\n", "image   = image.os\n  "+tc.declare+"\n", 1)
			})
			ctx := ctxT(t, time.Minute)
			res := l.apply(ctx, l.engine(s, func(o *apply.Options) { o.SecureBootChain = !tc.noChain }), s)
			failed := res.Errors["m0000"]
			if tc.failWith == "" && failed != "" || !strings.Contains(failed, tc.failWith) {
				t.Fatalf("failed: %q, want %q", failed, tc.failWith)
			}
			m := l.machine("m0000")
			if diff := cmp.Diff(tc.seen, m.FirmwareSecureBoot); diff != "" {
				t.Errorf("Secure Boot as the BMC said (-want +got):\n%s", diff)
			}
			if tc.noChain && len(l.fleet.Sim("m0000").Boots()) > 0 {
				t.Errorf("a Secure Boot machine with no signed chain to serve was powered on: %+v", l.fleet.Sim("m0000").Boots())
			}

			// What the netboot servers read.
			policy, err := storepolicy.New(ctx, l.store, storepolicy.Options{})
			if err != nil {
				t.Fatal(err)
			}
			mac, _ := net.ParseMAC(m.MAC)
			host, err := policy.Host(ctx, mac)
			if err != nil {
				t.Fatal(err)
			}
			if host.Boot != tc.boot {
				t.Errorf("netboot policy: boot %q, want %q", host.Boot, tc.boot)
			}
		})
	}
}
