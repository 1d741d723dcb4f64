package lab

import (
	"github.com/metal-dev/metal/internal/qemu"
)

// Firmware of a lab VM.
const (
	BIOS = "bios" // SeaBIOS, QEMU's default
	UEFI = "uefi" // OVMF
)

// BMC protocols of a lab VM, as the site file names them.
const (
	Redfish = "redfish"
	IPMI    = "ipmi"
)

// qemuCommand is the command line a VM's BMC starts it with. On BIOS the
// NIC comes first in the boot order and the disk second, as on a rack
// provisioned over the network: metal's iPXE script decides each boot
// whether the machine installs or boots its disk (sanboot). OVMF, once
// iPXE exits, does not go on to the disk (its boot manager creates no
// option for it behind the NIC's), so a UEFI VM boots its disk first: a
// blank disk falls through to the NIC, an installed one boots. The serial
// console goes to a socket (lab console) and is logged to a file either
// way (on the IPMI VM, the socket is the lab's serial line to its BMC's
// Serial-over-LAN). The VM's boot path (paths.go) says which of the NIC's
// boot programs runs: its iPXE ROM, or without it OVMF's own PXE or HTTP
// client, or none (virtual media: the BMC's CD). No argument holds a
// space: metal vbmc splits its qemu-cmd on spaces.
func qemuCommand(vm VM, memMiB int, acc string) []string {
	nicBoot, diskBoot := ",bootindex=1", "2"
	if vm.Firmware == UEFI {
		nicBoot, diskBoot = ",bootindex=2", "1"
	}
	nic := "virtio-net-pci,netdev=n0,mac=" + vm.MAC
	var fwCfg []string
	switch vm.BootPath {
	case PathUEFIPXE, PathSecureBoot:
		// No option ROM: OVMF's own PXE client boots, as a server's
		// firmware does (and, with Secure Boot on, would refuse iPXE).
		nic += ",romfile="
	case PathUEFIHTTP:
		// OVMF's PXE turned off: its HTTP boot client is the one left.
		nic += ",romfile="
		fwCfg = []string{"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
			"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"}
	case PathIPv6:
		// PXE over IPv4 off: the firmware goes to PXE over IPv6 at once
		// instead of waiting out DHCPv4 on a link that has none.
		nic += ",romfile="
		fwCfg = []string{"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n"}
	case PathVirtualMedia:
		// No netboot at all: the BMC's boot override says CD or disk.
		nic, nicBoot = nic+",romfile=", ""
	}
	args := append([]string{qemu.Program, "-name", vm.Name}, qemu.BaseArgs(acc, memMiB)...)
	args = append(args,
		"-chardev", serialChardev(vm),
		"-serial", "chardev:ser0",
		"-netdev", "tap,id=n0,ifname="+vm.Tap+",script=no,downscript=no",
		"-device", nic+nicBoot,
		"-drive", "file="+vm.Disk+",format=raw,if=none,id=d0,cache=unsafe",
		"-device", "virtio-blk-pci,drive=d0,bootindex="+diskBoot,
		// A hardware RNG, as servers have: under TCG the kernel's own
		// entropy takes minutes, and the agent's DHCP waits for it.
		"-device", "virtio-rng-pci",
	)
	args = append(args, fwCfg...)
	switch {
	case vm.SecureBoot:
		args = append(args, qemu.SecureBootArgs(vm.OVMFVars)...)
	case vm.Firmware == UEFI:
		args = append(args, qemu.UEFIArgs(vm.OVMFVars)...)
	}
	return args
}

// serialChardev is the VM's serial line and a log of everything on it.
// A VM with a console socket serves it (lab console, metal serve's hub),
// dropping what the VM prints while no one is connected. The IPMI VM's
// QEMU connects to the lab's serial line instead, at start and before
// the VM runs, so its BMC's Serial-over-LAN sees all it prints from
// power-on (ServeSerialLine).
func serialChardev(vm VM) string {
	sock := "path=" + vm.Console + ",server=on,wait=off"
	if vm.Line != "" {
		sock = "path=" + vm.Line + ",server=off"
	}
	return "socket,id=ser0," + sock + ",logfile=" + vm.Serial + ",logappend=on"
}
