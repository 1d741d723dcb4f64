package lab

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/metal-dev/metal/bmc/virtual"
)

// The lab's hardware as code: a BIOS image for the Redfish VMs' virtual
// BMCs, newer than the version they report (virtual.DefaultHardware's),
// so that the site file's commented hardware lines (HardwareMark) are a
// real firmware update and a real BIOS change for `metal plan` and
// `metal apply`.
const (
	FirmwareComponent = "BIOS"
	FirmwareVersion   = "1.17.0"
	firmwareFile      = "firmware/bios-" + FirmwareVersion + ".bin"
	// BIOSAttribute is set to BIOSValue by the commented lines; the
	// virtual BIOS has it Disabled.
	BIOSAttribute = "ProcVirtualization"
	BIOSValue     = "Enabled"
)

// HardwareMark starts the site file's lines that declare the Redfish VMs'
// BIOS setting and firmware; deleting it from them makes
// them part of the site, as the lab's test does.
const HardwareMark = "#hw "

// writeFirmware writes the lab's BIOS image into dir and returns its
// checksum as the site language writes it.
func writeFirmware(dir string) (string, error) {
	path := filepath.Join(dir, firmwareFile)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("firmware image: %w", err)
	}
	img := virtual.FirmwareImage(FirmwareComponent, FirmwareVersion, []byte("metal lab BIOS "+FirmwareVersion+"\n"))
	if err := os.WriteFile(path, img, 0o644); err != nil {
		return "", fmt.Errorf("firmware image: %w", err)
	}
	return fileSHA256(path)
}
