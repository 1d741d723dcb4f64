package bootkit

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/metal-dev/metal/internal/qemu"
)

// Firmware is the kind of machine QEMU emulates.
type Firmware string

const (
	BIOS Firmware = "bios" // SeaBIOS, QEMU's default
	UEFI Firmware = "uefi" // OVMF
	// UEFISecure is OVMF's Secure Boot build with Microsoft's keys
	// enrolled, for DiskBootArgs (a netbooting VM says VM.SecureBoot).
	UEFISecure Firmware = "uefi-secureboot"
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
	// HTTPBoot (UEFI only, implies NoROM) turns off OVMF's PXE boot
	// options through fw_cfg, so its HTTP boot client is the one that
	// boots: over IPv4 first, then IPv6. No TFTP is involved.
	HTTPBoot bool
	// PXE6 (UEFI only, implies NoROM) turns off OVMF's PXE over IPv4
	// through fw_cfg, so its PXE client boots over IPv6: the boot file
	// URL from DHCPv6 (option 59), then TFTP over IPv6.
	PXE6 bool
	// SecureBoot (UEFI only) boots OVMF's Secure Boot build with
	// Microsoft's keys enrolled: only signed boot programs run.
	SecureBoot bool
	// Serial is the file the serial console is written to.
	Serial string
	// Dir holds the VM's writable files (OVMF's variable store).
	Dir string
	// MemoryMiB defaults to 512.
	MemoryMiB int
	// Accel is "kvm" or "tcg": qemutest.Accel, the lab's probe.
	Accel string
}

// Args returns QEMU's arguments (without the program name). The machine
// exits instead of rebooting, so a kernel panic ends the test instead of
// looping.
func (vm VM) Args() ([]string, error) {
	if vm.Netdev == "" || vm.Serial == "" || len(vm.MAC) != 6 || vm.Accel == "" {
		return nil, errors.New("bootkit: VM needs Netdev, Serial, a MAC and Accel (qemutest.Accel)")
	}
	mem := vm.MemoryMiB
	if mem == 0 {
		mem = 512
	}
	args := append(qemu.BaseArgs(vm.Accel, mem), "-no-reboot",
		"-serial", "file:"+vm.Serial,
		"-netdev", vm.Netdev)
	nic := "virtio-net-pci,netdev=n0,mac=" + vm.MAC.String() + ",bootindex=1"
	if vm.NoROM || vm.HTTPBoot || vm.PXE6 {
		nic += ",romfile="
	}
	args = append(args, "-device", nic)
	if vm.Firmware != UEFI && (vm.NoROM || vm.HTTPBoot || vm.PXE6 || vm.SecureBoot) {
		return nil, errors.New("bootkit: only a UEFI VM boots without the NIC's iPXE ROM, over HTTP, over IPv6 or with Secure Boot")
	}
	if vm.HTTPBoot && vm.PXE6 {
		return nil, errors.New("bootkit: HTTPBoot turns PXE off; PXE6 needs it")
	}
	if vm.PXE6 {
		args = append(args, "-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n")
	}
	if vm.HTTPBoot {
		args = append(args,
			"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
			"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n")
	}
	if vm.SecureBoot {
		return secureBootArgs(args, vm.Dir)
	}
	return firmwareArgs(args, vm.Firmware, vm.Dir)
}

// secureBootArgs appends OVMF's Secure Boot build with a fresh variable
// store (Microsoft's keys enrolled) in dir.
func secureBootArgs(args []string, dir string) ([]string, error) {
	if dir == "" {
		return nil, errors.New("bootkit: a UEFI VM needs Dir for its variable store")
	}
	vars := filepath.Join(dir, "OVMF_VARS.ms.fd")
	if err := qemu.NewOVMFVarsMS(vars); err != nil {
		return nil, fmt.Errorf("bootkit: %w", err)
	}
	return append(args, qemu.SecureBootArgs(vars)...), nil
}

// firmwareArgs appends what fw needs to args: nothing for SeaBIOS, OVMF
// with a fresh variable store in dir for UEFI.
func firmwareArgs(args []string, fw Firmware, dir string) ([]string, error) {
	switch fw {
	case BIOS, "":
		return args, nil
	case UEFISecure:
		return secureBootArgs(args, dir)
	case UEFI:
		if dir == "" {
			return nil, errors.New("bootkit: a UEFI VM needs Dir for its variable store")
		}
		if _, err := os.Stat(qemu.OVMFCode); err != nil {
			return nil, fmt.Errorf("bootkit: %w (install the Debian package ovmf)", err)
		}
		vars := filepath.Join(dir, "OVMF_VARS.fd")
		if err := qemu.NewOVMFVars(vars); err != nil {
			return nil, fmt.Errorf("bootkit: %w", err)
		}
		return append(args, qemu.UEFIArgs(vars)...), nil
	}
	return nil, fmt.Errorf("bootkit: unknown firmware %q", fw)
}

// CheckQEMU returns an error naming the Debian package for each missing
// piece of a QEMU netboot: the emulator, the NIC ROMs, OVMF, busybox.
func CheckQEMU(fw Firmware) error {
	tools := append(qemu.Tools(fw == UEFI || fw == UEFISecure), qemu.Tool{Path: Busybox, Package: "busybox-static", File: true})
	if err := qemu.CheckTools(tools...); err != nil {
		return fmt.Errorf("bootkit: %w", err)
	}
	return nil
}

// DirectBoot is the QEMU command line (program first) of a machine that
// boots kernel and initrd at once, with no firmware boot, disk or NIC:
// the quickest way to a Linux serial console under TCG. Its serial port
// is chardev, a -chardev value with id=ser0 (a socket the test serves or
// connects to). A kernel panic powers the machine off.
func DirectBoot(accel string, memMiB int, kernel, initrd, chardev string) []string {
	return append(append([]string{qemu.Program}, qemu.BaseArgs(accel, memMiB)...),
		"-no-user-config", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 panic=-1 no_timer_check",
		"-chardev", chardev, "-serial", "chardev:ser0")
}
