package doctor

import (
	"context"
	"strings"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/plan"
)

// KindHardware: what a machine's BMC says of the BIOS settings, firmware
// and RAID the site declares for it.
const KindHardware = "hardware"

// checkHardware asks each BMC of a machine that declares boot_mode, bios,
// firmware or raid what plan asks it: whether its attribute registry
// allows each BIOS value, whether it lists each firmware component and
// the controller each named drive. A BMC without a registry is a warning:
// its BIOS values go unchecked until apply.
func checkHardware(ctx context.Context, opts Options) []Check {
	obs := map[string]plan.Attributes{}
	for _, m := range opts.Site.Machines {
		if m.BMC != nil && (m.BootMode != "" || len(m.BIOS) > 0 || len(m.Firmware) > 0 || len(m.RAID) > 0) {
			obs[m.Name] = plan.Attributes{}
		}
	}
	if len(obs) == 0 {
		return nil
	}
	findings := apply.RefreshHardware(ctx, opts.Site, obs, apply.DriverBMCs(opts.Logger, func(c *bmc.Config) {
		c.Timeout, c.Retries = opts.BMCTimeout, 1
	}))
	by := map[string][]string{}
	for _, f := range findings {
		by[f.Machine] = append(by[f.Machine], f.Message)
	}
	var out []Check
	for _, m := range opts.Site.Machines {
		if _, ok := obs[m.Name]; !ok {
			continue
		}
		c := Check{Kind: KindHardware, Subject: "hardware of " + m.Name, Status: OK,
			Detail: "the BMC knows every BIOS setting, firmware component and drive the site declares"}
		var fails, notes []string
		for _, msg := range by[m.Name] {
			if strings.HasPrefix(msg, "note: ") {
				notes = append(notes, strings.TrimPrefix(msg, "note: "))
			} else {
				fails = append(fails, msg)
			}
		}
		switch {
		case len(fails) > 0:
			c.Status, c.Detail = Fail, strings.Join(fails, "; ")
			c.Fix = "use the attribute names, values, firmware components and drives the BMC reports (`metal bmc inventory`)"
		case len(notes) > 0:
			c.Status, c.Detail = Warn, strings.Join(notes, "; ")
			c.Fix = "check the BIOS values against the vendor's documentation"
		}
		out = append(out, c)
	}
	return out
}
