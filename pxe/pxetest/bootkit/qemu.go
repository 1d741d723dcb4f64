package bootkit

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
)

// Firmware is the kind of machine QEMU emulates.
type Firmware string

const (
	BIOS Firmware = "bios" // SeaBIOS, QEMU's default
	UEFI Firmware = "uefi" // OVMF
)

// OVMF firmware from Debian's ovmf package: the 4 MiB build without
// Secure Boot, which Debian's own iPXE (unsigned) needs.
const (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// VM describes a diskless QEMU machine that boots from its one NIC.
type VM struct {
	Firmware Firmware
	MAC      net.HardwareAddr
	// Netdev is QEMU's -netdev value with id=n0, e.g.
	// "tap,id=n0,ifname=tap0,script=no,downscript=no".
	Netdev string
	// NoROM leaves out the NIC's option ROM (iPXE from ipxe-qemu). OVMF
	// then boots with its own PXE client over its own virtio-net driver,
	// which fetches iPXE by TFTP as a real UEFI machine's firmware would.
	// SeaBIOS cannot netboot without the ROM.
	NoROM bool
	// Serial is the file the serial console is written to.
	Serial string
	// Dir holds the VM's writable files (OVMF's variable store).
	Dir string
	// MemoryMiB defaults to 512.
	MemoryMiB int
}

// Args returns QEMU's arguments (without the program name). The machine is
// TCG only, so tests run the same where there is no KVM; it exits instead of
// rebooting, so a kernel panic ends the test instead of looping.
func (vm VM) Args() ([]string, error) {
	if vm.Netdev == "" || vm.Serial == "" || len(vm.MAC) != 6 {
		return nil, errors.New("bootkit: VM needs Netdev, Serial and a MAC")
	}
	mem := vm.MemoryMiB
	if mem == 0 {
		mem = 512
	}
	args := []string{
		"-machine", "pc,accel=tcg", "-m", fmt.Sprint(mem), "-smp", "1",
		"-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot",
		"-serial", "file:" + vm.Serial,
		"-netdev", vm.Netdev,
	}
	nic := "virtio-net-pci,netdev=n0,mac=" + vm.MAC.String() + ",bootindex=1"
	if vm.NoROM {
		nic += ",romfile="
	}
	args = append(args, "-device", nic)
	switch vm.Firmware {
	case BIOS, "":
		if vm.NoROM {
			return nil, errors.New("bootkit: SeaBIOS cannot netboot without the NIC's iPXE ROM")
		}
	case UEFI:
		if vm.Dir == "" {
			return nil, errors.New("bootkit: a UEFI VM needs Dir for its variable store")
		}
		vars := filepath.Join(vm.Dir, "OVMF_VARS.fd")
		if err := copyFile(OVMFVars, vars); err != nil {
			return nil, fmt.Errorf("bootkit: %w (install the Debian package ovmf)", err)
		}
		if _, err := os.Stat(OVMFCode); err != nil {
			return nil, fmt.Errorf("bootkit: %w (install the Debian package ovmf)", err)
		}
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+OVMFCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+vars)
	default:
		return nil, fmt.Errorf("bootkit: unknown firmware %q", vm.Firmware)
	}
	return args, nil
}

// CheckQEMU returns an error naming the Debian package for each missing
// piece of a QEMU netboot: the emulator, the NIC ROMs, busybox.
func CheckQEMU(fw Firmware) error {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return errors.New("bootkit: qemu-system-x86_64 not found: install the Debian package qemu-system-x86")
	}
	if _, err := os.Stat("/usr/lib/ipxe/qemu/efi-virtio.rom"); err != nil {
		return errors.New("bootkit: QEMU's iPXE ROMs not found: install the Debian package ipxe-qemu")
	}
	if _, err := os.Stat(Busybox); err != nil {
		return errors.New("bootkit: busybox not found: install the Debian package busybox-static")
	}
	if fw == UEFI {
		if _, err := os.Stat(OVMFCode); err != nil {
			return errors.New("bootkit: OVMF not found: install the Debian package ovmf")
		}
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
