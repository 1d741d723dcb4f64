package apply

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/site"
)

// Hardware steps of a machine's run.
const (
	StepBIOS       Step = "bios"            // stage the BIOS settings that differ
	StepBIOSReset  Step = "bios-reset"      // the reset that applies them
	StepBIOSVerify Step = "bios-verify"     // read back: in effect, nothing left pending
	StepFirmware   Step = "firmware"        // read the version; have the BMC install the image
	StepFlash      Step = "firmware-flash"  // the BMC's update task, followed to its end
	StepFlashCheck Step = "firmware-verify" // read back the new version
)

// biosModeAttr is the BIOS attribute boot_mode sets, as DMTF's mockups,
// Dell and HPE name it.
const biosModeAttr = "BootMode"

// wantsHardware reports whether the site sets hardware for m.
func wantsHardware(m *site.Machine) bool {
	return wantsBIOS(m) || (m != nil && (len(m.Firmware) > 0 || len(m.RAID) > 0))
}

// wantsBIOS reports whether the site sets BIOS settings for m.
func wantsBIOS(m *site.Machine) bool { return m != nil && (m.BootMode != "" || len(m.BIOS) > 0) }

// desiredBIOS is what m's BIOS attributes must be on this BMC: its bios
// map, and boot_mode as the BMC's own BootMode value (the registry's, or
// the common Uefi / LegacyBios).
func desiredBIOS(m *site.Machine, cur bmc.BIOS) map[string]string {
	out := maps.Clone(m.BIOS)
	if out == nil {
		out = map[string]string{}
	}
	if m.BootMode != "" {
		out[biosModeAttr] = bootModeValue(m.BootMode, cur)
	}
	return out
}

func bootModeValue(mode string, cur bmc.BIOS) string {
	if mode == site.BootModeUEFI {
		return "Uefi"
	}
	allowed := cur.Registry[biosModeAttr].Values
	for _, v := range []string{"LegacyBios", "Bios", "Legacy"} {
		if slices.Contains(allowed, v) {
			return v
		}
	}
	return "LegacyBios"
}

// siteBootMode maps a BMC's BootMode value back to the site's words.
func siteBootMode(v string) string {
	switch strings.ToLower(v) {
	case "":
		return ""
	case "uefi":
		return site.BootModeUEFI
	case "legacybios", "bios", "legacy":
		return site.BootModeLegacy
	}
	return v
}

// RefreshHardware replaces the last-applied hardware settings in obs with
// what each machine's BMC reports (in effect, and pending), for the
// machines of s that declare boot_mode, bios, firmware or raid and were
// applied before. A BMC that cannot be read, or that does not know an
// attribute or value, becomes a finding; its machine keeps the
// last-applied values. So does drift: a setting the BMC reports other
// than metal last applied it, changed outside metal (by hand, a vendor
// tool, a BIOS reset), which the plan then sets back.
func RefreshHardware(ctx context.Context, s *site.Site, obs map[string]plan.Attributes, bmcs BMCFunc) []plan.Finding {
	var todo []*site.Machine
	for _, m := range s.Machines {
		if _, ok := obs[m.Name]; ok && wantsHardware(m) && m.BMC != nil {
			todo = append(todo, m)
		}
	}
	results := make([]hwResult, len(todo))
	eachBMC(len(todo), func(i int) { results[i] = readHardware(ctx, todo[i], bmcs) })
	var out []plan.Finding
	for _, r := range results {
		applied := obs[r.name]
		for _, f := range append(r.findings, drift(applied, r)...) {
			out = append(out, plan.Finding{Machine: r.name, Message: f})
		}
		if r.raidRead {
			// The controller's volumes are the whole truth: one metal
			// built that is gone is gone.
			for k := range applied {
				if _, ok := r.attrs[k]; !ok && strings.HasPrefix(k, plan.RAIDPrefix) {
					delete(applied, k)
				}
			}
		}
		for k, v := range r.attrs {
			applied[k] = v
		}
	}
	return out
}

// drift lists the hardware settings the BMC reports other than metal
// last applied them (a value metal staged and the BMC holds pending is
// not drift).
func drift(applied plan.Attributes, r hwResult) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(applied)) {
		if !plan.IsHardware(k) || applied[k].Sensitive {
			continue
		}
		was := applied[k].Text
		now, ok := r.attrs[k]
		switch {
		case ok && now.Text != was && now.Pending != was:
			out = append(out, fmt.Sprintf("drift: %s is %q on the BMC; metal applied %q (changed outside metal; apply sets it back)", k, now.Text, was))
		case !ok && r.raidRead && strings.HasPrefix(k, plan.RAIDPrefix):
			out = append(out, fmt.Sprintf("drift: volume %s (%s) that metal built is gone from the controller (apply builds it again)", strings.TrimPrefix(k, plan.RAIDPrefix), was))
		}
	}
	return out
}

// hwResult is what one BMC reported of a machine's hardware settings.
type hwResult struct {
	name     string
	attrs    plan.Attributes
	findings []string
	// raidRead: attrs hold every volume of the controller.
	raidRead bool
}

func readHardware(ctx context.Context, m *site.Machine, bmcs BMCFunc) (r hwResult) {
	r.name = m.Name
	b, err := bmcs(inventory.Machine{Name: m.Name}, m)
	if err != nil || b == nil {
		r.findings = append(r.findings, fmt.Sprintf("hardware settings not read (no usable BMC: %v); the plan compares with what metal last applied", err))
		return r
	}
	r.attrs = plan.Attributes{}
	if wantsBIOS(m) {
		readBIOSSettings(ctx, m, b, &r)
	}
	if len(m.Firmware) > 0 {
		readFirmware(ctx, m, b, &r)
	}
	if len(m.RAID) > 0 {
		readRAID(ctx, m, b, &r)
	}
	return r
}

func readBIOSSettings(ctx context.Context, m *site.Machine, b BMC, r *hwResult) {
	hb, ok := b.(HardwareBMC)
	if !ok {
		r.findings = append(r.findings, "this BMC cannot report BIOS settings; the plan compares with what metal last applied")
		return
	}
	cur, err := hb.BIOS(ctx)
	if err != nil {
		r.findings = append(r.findings, fmt.Sprintf("BIOS settings not read: %v; the plan compares with what metal last applied", err))
		return
	}
	if cur.Registry == nil {
		r.findings = append(r.findings, "note: the BMC publishes no BIOS attribute registry, so BIOS values are not checked before apply (names are checked against the attributes it reports)")
	}
	want := desiredBIOS(m, cur)
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if msg := cur.Check(k, want[k]); msg != "" {
			r.findings = append(r.findings, msg)
		}
		name, now, pending := plan.BIOSPrefix+k, cur.Attributes[k], cur.Pending[k]
		if k == biosModeAttr && m.BootMode != "" {
			name, now, pending = "boot_mode", siteBootMode(now), siteBootMode(pending)
		}
		if _, ok := cur.Attributes[k]; !ok {
			now = "(absent)"
		}
		r.attrs[name] = plan.Value{Text: now, Pending: pending}
	}
}

// readFirmware reads the version of each firmware component m declares;
// a component the BMC does not list, or cannot update, is a finding.
func readFirmware(ctx context.Context, m *site.Machine, b BMC, r *hwResult) {
	fb, ok := b.(FirmwareBMC)
	if !ok {
		r.findings = append(r.findings, "this BMC cannot report firmware versions; the plan compares with what metal last applied")
		return
	}
	for _, f := range m.Firmware {
		cur, err := fb.Firmware(ctx, f.Component)
		if err != nil {
			r.findings = append(r.findings, fmt.Sprintf("firmware %s not read: %v", f.Component, err))
			continue
		}
		if !cur.Updateable && cur.Version != f.Version {
			r.findings = append(r.findings, fmt.Sprintf("firmware %s is not updateable on this BMC", f.Component))
		}
		r.attrs[plan.FirmwarePrefix+f.Component] = plan.Value{Text: cur.Version}
	}
}

// hardware brings the machine's BIOS settings to what the site declares:
// stage those that differ (unless the BMC already holds them pending, as
// after a run stopped between the PATCH and the reset), reset the machine
// to apply them, and read back. It returns whether the machine was reset.
func (m *machineRun) hardware(ctx context.Context) (bool, error) {
	if !wantsHardware(m.decl) {
		return false, nil
	}
	// Firmware first: a new BIOS may come up with its defaults, which
	// the settings then correct.
	if err := m.firmware(ctx); err != nil {
		return false, err
	}
	if err := m.raid(ctx); err != nil {
		return false, err
	}
	if !wantsBIOS(m.decl) {
		return false, nil
	}
	if m.bmc == nil {
		return false, &stepError{StepBIOS, fmt.Errorf("boot_mode and bios are set through the machine's BMC, and it has none")}
	}
	hb, ok := m.bmc.(HardwareBMC)
	if !ok {
		return false, &stepError{StepBIOS, fmt.Errorf("this machine's BMC cannot change BIOS settings (metal sets them over Redfish)")}
	}
	var cur bmc.BIOS
	if err := m.bmcStep(ctx, StepBIOS, "", func(ctx context.Context) error {
		var err error
		cur, err = hb.BIOS(ctx)
		return err
	}); err != nil {
		return false, err
	}
	want := desiredBIOS(m.decl, cur)
	need := map[string]string{}
	for k, v := range want {
		if cur.Attributes[k] != v {
			need[k] = v
		}
	}
	if len(need) == 0 {
		m.r.opts.Hook.MachineStep(m.name, StepBIOS, "BIOS settings already in effect")
		return false, nil
	}
	stage := map[string]string{}
	for k, v := range need {
		if p, ok := cur.Pending[k]; !ok || p != v {
			stage[k] = v
		}
	}
	if len(stage) > 0 {
		if err := m.bmcStep(ctx, StepBIOS, "stage "+listAttrs(stage), func(ctx context.Context) error {
			return hb.SetBIOS(ctx, stage)
		}); err != nil {
			return false, err
		}
		m.event(ctx, "bios: staged "+listAttrs(stage))
	} else {
		m.r.opts.Hook.MachineStep(m.name, StepBIOS, "already pending at the BMC: not staged again")
	}
	if err := m.bmcStep(ctx, StepBIOSReset, "reset to apply the BIOS settings", hb.Reset); err != nil {
		return true, err
	}
	var after bmc.BIOS
	if err := m.bmcStep(ctx, StepBIOSVerify, "", func(ctx context.Context) error {
		var err error
		after, err = hb.BIOS(ctx)
		return err
	}); err != nil {
		return true, err
	}
	var wrong []string
	for _, k := range slices.Sorted(maps.Keys(need)) {
		if got := after.Attributes[k]; got != need[k] {
			w := fmt.Sprintf("%s is %q, want %q", k, got, need[k])
			if p, ok := after.Pending[k]; ok {
				w += fmt.Sprintf(" (%q still pending)", p)
			}
			wrong = append(wrong, w)
		}
	}
	if len(wrong) > 0 {
		return true, &stepError{StepBIOSVerify, fmt.Errorf("after the reset the BMC reports %s: the BIOS did not take the settings", strings.Join(wrong, "; "))}
	}
	m.event(ctx, "bios: in effect after reset: "+listAttrs(need))
	return true, nil
}

func listAttrs(a map[string]string) string {
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + a[k]
	}
	return strings.Join(keys, ", ")
}

// eachBMC runs fn(0..n-1), at most 16 at a time: one slow BMC must not
// hold up a plan of a rack, and a rack's worth must not all be asked at
// once.
func eachBMC(n int, fn func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			fn(i)
		}()
	}
	wg.Wait()
}
