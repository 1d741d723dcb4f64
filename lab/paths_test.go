package lab_test

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/lab"
	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/pxe/pxetest/bootkit"
)

// pathCheck says what else, beyond a provisioned VM whose OS booted and
// phoned home, proves that a VM took its boot path: its record and boot
// timeline in metal's store, its serial console, and the TFTP transfers
// in metal serve's log.
type pathCheck func(vm lab.VM, m inventory.Machine, evs []inventory.Event, serial, serveLog string) error

var pathChecks = map[string]pathCheck{
	lab.PathBIOSPXE: func(_ lab.VM, _ inventory.Machine, evs []inventory.Event, _, _ string) error {
		return want(evs, inventory.EventScript, "")
	},
	// The firmware's own PXE client fetched iPXE over TFTP.
	lab.PathUEFIPXE: func(vm lab.VM, _ inventory.Machine, _ []inventory.Event, _, serveLog string) error {
		return tftpGot(serveLog, vm.IP, bootfiles.UEFI)
	},
	// No TFTP at all.
	lab.PathUEFIHTTP: func(vm lab.VM, _ inventory.Machine, evs []inventory.Event, _, serveLog string) error {
		if line, ok := findLine(serveLog, `msg="tftp transfer"`, "client="+vm.IP+":"); ok {
			return fmt.Errorf("a TFTP transfer to it: %s", line)
		}
		return want(evs, inventory.EventScript, "")
	},
	// Learned from the BMC; the signed chain over TFTP; the agent's kernel
	// and the installed OS's both ran with Secure Boot on.
	lab.PathSecureBoot: func(vm lab.VM, m inventory.Machine, _ []inventory.Event, serial, serveLog string) error {
		if m.FirmwareSecureBoot == nil || !*m.FirmwareSecureBoot {
			return fmt.Errorf("the store has not learned Secure Boot from the BMC (%v)", m.FirmwareSecureBoot)
		}
		if err := tftpGot(serveLog, vm.IP, bootfiles.Shim); err != nil {
			return err
		}
		if line, ok := findLine(serveLog, `msg="tftp transfer"`, "client="+vm.IP+":", "file="+bootfiles.UEFI); ok {
			return fmt.Errorf("metal served it the unsigned iPXE: %s", line)
		}
		if n := strings.Count(serial, "Secure boot enabled"); n < 2 {
			return fmt.Errorf("the kernel said \"Secure boot enabled\" %d times; want the agent's and the installed OS's", n)
		}
		return nil
	},
	// Never a DHCP packet from it; the agent had its fixed address.
	lab.PathVirtualMedia: func(_ lab.VM, _ inventory.Machine, evs []inventory.Event, serial, _ string) error {
		for _, k := range []inventory.EventKind{inventory.EventDHCPDiscover, inventory.EventDHCPOffer, inventory.EventDHCPAck} {
			if err := none(evs, k); err != nil {
				return err
			}
		}
		if !strings.Contains(serial, "metal.ip=198.51.100.") {
			return fmt.Errorf("the agent's kernel line has no fixed address on the routed segment")
		}
		return nil
	},
	// iPXE over TFTP on IPv6; the agent and the installed OS on the
	// machine's IPv6 address.
	lab.PathIPv6: func(vm lab.VM, _ inventory.Machine, evs []inventory.Event, serial, serveLog string) error {
		if err := tftpGot(serveLog, "["+vm.IP6+"]", bootfiles.UEFI); err != nil {
			return err
		}
		if err := want(evs, inventory.EventScript, ""); err != nil {
			return err
		}
		if !strings.Contains(serial, "2001:db8:0:6c::") {
			return fmt.Errorf("the serial console never shows an address on the IPv6-only link")
		}
		return nil
	},
}

// want says whether the timeline has an event of kind whose message holds
// part.
func want(evs []inventory.Event, kind inventory.EventKind, part string) error {
	for _, e := range evs {
		if e.Kind == kind && strings.Contains(e.Message, part) {
			return nil
		}
	}
	return fmt.Errorf("no %s event holding %q in its boot timeline", kind, part)
}

// tftpGot says whether metal serve's log has a whole TFTP transfer of file
// to client (its address as the log writes it).
func tftpGot(serveLog, client, file string) error {
	if _, ok := findLine(serveLog, `msg="tftp transfer"`, "client="+client+":", "file="+file+" ", "result=ok"); !ok {
		return fmt.Errorf("metal serve's log has no TFTP transfer of %s to %s", file, client)
	}
	return nil
}

// findLine returns the first line of log holding every one of parts.
func findLine(log string, parts ...string) (string, bool) {
	for line := range strings.Lines(log) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return line, true
		}
	}
	return "", false
}

func none(evs []inventory.Event, kind inventory.EventKind) error {
	for _, e := range evs {
		if e.Kind == kind {
			return fmt.Errorf("a %s event in its boot timeline: %s", kind, e.Message)
		}
	}
	return nil
}

// TestLabBootPaths is `metal lab up --machines 0 --boot-paths all` end to
// end: a lab of one VM per boot path; `metal lab apply` provisions them
// all at once through metal apply, each VM boots its installed OS (the
// lab image's marker on its serial console) and phones home, metal lab
// status names its path, and its boot timeline and console show it took
// that path. One lab, beside TestLab and the others: its VMs boot in
// parallel inside it, and it takes one of go test's parallel slots.
// METAL_LAB_BOOT_PATHS (a --boot-paths value) runs some of them only.
func TestLabBootPaths(t *testing.T) {
	requireLab(t)
	paths, err := lab.ParseBootPaths(cmp.Or(os.Getenv("METAL_LAB_BOOT_PATHS"), "all"))
	if err != nil {
		t.Fatal(err)
	}
	t.Parallel()
	labBootPaths(t, buildMetal(t), paths)
}

func labBootPaths(t *testing.T, metal string, paths []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dir := labDir(t)
	st := upLabWith(t, ctx, lab.Config{Dir: dir, Machines: 0, BootPaths: paths, Metal: metal, MemoryMiB: 768})
	if len(st.VMs) != len(paths) {
		t.Fatalf("lab up made %d VMs for %d boot paths", len(st.VMs), len(paths))
	}

	// Under TCG the firmware's timeouts alone take minutes on some
	// paths: OVMF's PXE over IPv6 after its DHCPv4, iPXE's DHCPv4 before
	// its DHCPv6.
	out, err := groupCommand(ctx, metal, "lab", "apply", "--dir", dir, "--", "--boot-timeout", "15m").CombinedOutput()
	if err != nil {
		// Each VM's checks below say which path failed.
		t.Errorf("metal lab apply: %v", err)
	}
	for _, vm := range st.VMs {
		wait, stop := context.WithTimeout(ctx, 3*time.Minute)
		err := bootkit.WaitForMarker(wait, vm.Serial, lab.PhonedHome, nil)
		stop()
		if err != nil {
			t.Errorf("%s did not boot its disk and phone home: %v", vm.Name, err)
		}
	}
	status, err := groupCommand(ctx, metal, "lab", "status", "--dir", dir).CombinedOutput()
	if err != nil {
		t.Errorf("metal lab status: %v\n%s", err, status)
	}
	for _, vm := range st.VMs {
		if !hasRow(string(status), vm.Name, vm.BootPath) {
			t.Errorf("metal lab status shows no boot path %s for %s:\n%s", vm.BootPath, vm.Name, status)
		}
	}

	// The machines' records, from the store once serve lets go of it.
	st, err = lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.StopServe(); err != nil {
		t.Fatal(err)
	}
	store, err := backend.Open(ctx, st.StoreURL(), backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	serveLog := ""
	if p, ok := st.Proc("serve"); ok {
		b, _ := os.ReadFile(p.Log)
		serveLog = string(b)
	}
	for _, vm := range st.VMs {
		m, err := store.Machine(ctx, vm.Name)
		if err != nil {
			t.Fatal(err)
		}
		if m.State != inventory.StateProvisioned {
			t.Errorf("%s is %q in the store, want provisioned", vm.Name, m.State)
		}
		evs, err := store.Events(ctx, inventory.EventQuery{Machine: vm.Name})
		if err != nil {
			t.Fatal(err)
		}
		serial, _ := os.ReadFile(vm.Serial)
		if err := pathChecks[vm.BootPath](vm, m, evs, string(serial), serveLog); err != nil {
			t.Errorf("%s: %v", vm.Name, err)
		}
	}
	if t.Failed() {
		t.Logf("apply:\n%s\n%s", out, serialLogs(st))
	}
}

// hasRow says whether a line of a table starts with name and holds cell.
func hasRow(table, name, cell string) bool {
	for line := range strings.Lines(table) {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == name && strings.Contains(line, " "+cell+" ") {
			return true
		}
	}
	return false
}
