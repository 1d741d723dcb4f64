// Package qemu is what metal's lab, its tests and its test helpers know of
// QEMU on Debian: where the firmware and NIC ROMs are, which packages
// provide them, the common head of a command line, and which accelerator
// (KVM or TCG) really runs a guest on this host.
package qemu

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
)

// Program is the emulator every metal VM runs under.
const Program = "qemu-system-x86_64"

// Debian's firmware and ROMs. OVMF is the 4 MiB build without Secure Boot,
// which Debian's unsigned iPXE needs; the virtio NIC's iPXE option ROM is
// the one QEMU loads from ipxe-qemu.
const (
	OVMFCode  = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars  = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	VirtioROM = "/usr/lib/ipxe/qemu/efi-virtio.rom"
)

// Debian's Secure Boot build of OVMF and a variable store with Microsoft's
// keys enrolled (db holds the UEFI CA that signs Debian's shim). The
// firmware needs SMM: see SecureBootArgs.
const (
	OVMFCodeSecure = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd"
	OVMFVarsMS     = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
)

// Tool is a program or file a QEMU machine needs, and the Debian package
// that provides it.
type Tool struct {
	Path, Package string
	File          bool // Path is a file, not a program on PATH
}

// Tools are what a netbooting QEMU machine needs: the emulator, the NIC's
// iPXE ROM and, with uefi, OVMF.
func Tools(uefi bool) []Tool {
	t := []Tool{
		{Path: Program, Package: "qemu-system-x86"},
		{Path: VirtioROM, Package: "ipxe-qemu", File: true},
	}
	if uefi {
		t = append(t, Tool{Path: OVMFCode, Package: "ovmf", File: true})
	}
	return t
}

// CheckTools reports every missing tool at once, naming the Debian
// packages to install.
func CheckTools(tools ...Tool) error {
	var missing []error
	for _, r := range tools {
		var err error
		if r.File {
			_, err = os.Stat(r.Path)
		} else {
			_, err = exec.LookPath(r.Path)
		}
		if err != nil {
			missing = append(missing, fmt.Errorf("%s not found: install the Debian package %s", r.Path, r.Package))
		}
	}
	return errors.Join(missing...)
}

// BaseArgs start every metal QEMU command line (without the program): a
// PC with one CPU, no default devices, no display and no monitor, under
// accel ("kvm" or "tcg", see Choose).
func BaseArgs(accel string, memMiB int) []string {
	return []string{
		"-machine", "pc", "-accel", accel, "-m", strconv.Itoa(memMiB), "-smp", "1",
		"-nodefaults", "-display", "none", "-monitor", "none",
	}
}

// UEFIArgs load OVMF with the machine's own variable store, vars (see
// NewOVMFVars).
func UEFIArgs(vars string) []string {
	return []string{
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + OVMFCode,
		"-drive", "if=pflash,format=raw,unit=1,file=" + vars,
	}
}

// SecureBootArgs load OVMF's Secure Boot build with the machine's own
// variable store, vars (a copy of OVMFVarsMS, see NewOVMFVarsMS). They
// follow BaseArgs, whose "-machine pc" they override: the firmware keeps
// its variables in SMM, so the machine is a q35 with SMM on and the flash
// writable only from SMM, or OVMF stops before it prints anything.
func SecureBootArgs(vars string) []string {
	return []string{
		"-machine", "q35,smm=on",
		"-global", "driver=cfi.pflash01,property=secure,value=on",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + OVMFCodeSecure,
		"-drive", "if=pflash,format=raw,unit=1,file=" + vars,
	}
}

// NewOVMFVarsMS writes a fresh copy of the variable store with Microsoft's
// keys enrolled, which turns Secure Boot on, to path.
func NewOVMFVarsMS(path string) error {
	if err := copyFile(OVMFVarsMS, path); err != nil {
		return fmt.Errorf("%w (install the Debian package ovmf)", err)
	}
	return nil
}

// NewOVMFVars writes a fresh copy of OVMF's variable store to path: each
// UEFI machine needs its own, writable.
func NewOVMFVars(path string) error {
	if err := copyFile(OVMFVars, path); err != nil {
		return fmt.Errorf("%w (install the Debian package ovmf)", err)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
