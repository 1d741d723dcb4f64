package lab

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
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

// OVMF firmware from Debian's ovmf package: the 4 MiB build without Secure
// Boot, which Debian's unsigned iPXE needs.
const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	// The virtio NIC's iPXE option ROM that QEMU loads, from ipxe-qemu.
	virtioROM = "/usr/lib/ipxe/qemu/efi-virtio.rom"
)

// requirement is a program or file the lab needs, and the Debian package
// that provides it.
type requirement struct {
	path, pkg string
	file      bool // path is a file, not a program on PATH
}

// checkTools reports every missing requirement at once, naming the Debian
// packages to install (make lab installs them).
func checkTools(reqs []requirement) error {
	var missing []error
	for _, r := range reqs {
		var err error
		if r.file {
			_, err = os.Stat(r.path)
		} else {
			_, err = exec.LookPath(r.path)
		}
		if err != nil {
			missing = append(missing, fmt.Errorf("%s not found: install the Debian package %s", r.path, r.pkg))
		}
	}
	return errors.Join(missing...)
}

// accel is KVM when this machine offers it, else TCG (CI, nested clouds).
func accel() string {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg"
	}
	f.Close()
	return "kvm"
}

// qemuCommand is the command line a VM's BMC starts it with. On BIOS the
// NIC comes first in the boot order and the disk second, as on a rack
// provisioned over the network: metal's iPXE script decides each boot
// whether the machine installs or boots its disk (sanboot). OVMF, once
// iPXE exits, does not go on to the disk (its boot manager creates no
// option for it behind the NIC's), so a UEFI VM boots its disk first: a
// blank disk falls through to the NIC, an installed one boots. The serial
// console goes to a socket (lab console) and is logged to a file either
// way. No argument holds a space: metal vbmc splits its qemu-cmd on spaces.
func qemuCommand(vm VM, memMiB int, acc string) []string {
	nicBoot, diskBoot := "1", "2"
	if vm.Firmware == UEFI {
		nicBoot, diskBoot = "2", "1"
	}
	args := []string{
		"qemu-system-x86_64", "-name", vm.Name,
		"-machine", "pc", "-accel", acc, "-m", strconv.Itoa(memMiB), "-smp", "1",
		"-nodefaults", "-display", "none", "-monitor", "none",
		"-chardev", "socket,id=ser0,path=" + vm.Console + ",server=on,wait=off,logfile=" + vm.Serial + ",logappend=on",
		"-serial", "chardev:ser0",
		"-netdev", "tap,id=n0,ifname=" + vm.Tap + ",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=" + vm.MAC + ",bootindex=" + nicBoot,
		"-drive", "file=" + vm.Disk + ",format=raw,if=none,id=d0,cache=unsafe",
		"-device", "virtio-blk-pci,drive=d0,bootindex=" + diskBoot,
		// A hardware RNG, as servers have: under TCG the kernel's own
		// entropy takes minutes, and the agent's DHCP waits for it.
		"-device", "virtio-rng-pci",
	}
	if vm.Firmware == UEFI {
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+vm.OVMFVars)
	}
	return args
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
