package agent

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sgIOHdr is Linux's struct sg_io_hdr (scsi/sg.h), the argument of SG_IO:
// one SCSI command, here ATA PASS-THROUGH (16), through the SCSI layer to
// a SATA drive (libata translates it).
type sgIOHdr struct {
	InterfaceID    int32
	DxferDirection int32
	CmdLen         uint8
	MxSbLen        uint8
	IovecCount     uint16
	DxferLen       uint32
	Dxferp         uintptr
	Cmdp           uintptr
	Sbp            uintptr
	Timeout        uint32
	Flags          uint32
	PackID         int32
	UsrPtr         uintptr
	Status         uint8
	MaskedStatus   uint8
	MsgStatus      uint8
	SbLenWr        uint8
	HostStatus     uint16
	DriverStatus   uint16
	Resid          int32
	Duration       uint32
	Info           uint32
}

const (
	sgIO          = 0x2285
	sgDxferNone   = -1
	sgDxferToDev  = -2
	sgDxferFromDv = -3

	ataIdentify           = 0xec
	ataSecuritySetPass    = 0xf1
	ataSecurityErasePrep  = 0xf3
	ataSecurityEraseUnit  = 0xf4
	ataSecurityDisablePwd = 0xf6
)

// ataSecurity is the ATA security state of a drive, from IDENTIFY DEVICE
// word 128 (and 89, 90: the erase times the drive announces).
type ataSecurity struct {
	Supported, Enabled, Locked, Frozen, CountExpired, Enhanced bool
	EraseTime, EnhancedTime                                    time.Duration
	Model, Serial                                              string
}

// ataString is an IDENTIFY string: byte pairs swapped, space padded.
func ataString(b []byte) string {
	s := make([]byte, len(b))
	for i := 0; i+1 < len(b); i += 2 {
		s[i], s[i+1] = b[i+1], b[i]
	}
	return strings.Trim(string(s), " \x00")
}

// ataEraseTime reads word 89 or 90: minutes/2 in bits 7:0 (ACS-2) or
// 14:0 when bit 15 says the extended format; 0 is not reported.
func ataEraseTime(w uint16) time.Duration {
	v := w & 0xff
	if w&0x8000 != 0 {
		v = w & 0x7fff
	}
	return time.Duration(v) * 2 * time.Minute
}

func parseATAIdentify(b []byte) ataSecurity {
	w := func(i int) uint16 { return binary.LittleEndian.Uint16(b[2*i:]) }
	sec := w(128)
	return ataSecurity{
		Supported: w(82)&(1<<1) != 0 && sec&1 != 0,
		Enabled:   sec&(1<<1) != 0, Locked: sec&(1<<2) != 0, Frozen: sec&(1<<3) != 0,
		CountExpired: sec&(1<<4) != 0, Enhanced: sec&(1<<5) != 0,
		EraseTime: ataEraseTime(w(89)), EnhancedTime: ataEraseTime(w(90)),
		Serial: ataString(b[20:40]), Model: ataString(b[54:94]),
	}
}

// State is the security state in the words hdparm uses.
func (s ataSecurity) State() string {
	if !s.Supported {
		return "no ATA security feature set"
	}
	var parts []string
	for _, p := range []struct {
		on   bool
		what string
	}{{s.Enabled, "enabled"}, {s.Locked, "locked"}, {s.Frozen, "frozen"}, {s.CountExpired, "password attempts expired"}} {
		if p.on {
			parts = append(parts, p.what)
		}
	}
	if len(parts) == 0 {
		return "supported, not enabled, not locked, not frozen"
	}
	return strings.Join(parts, ", ")
}

// ataCommand runs one ATA command through ATA PASS-THROUGH (16): PIO
// data in (data read), PIO data out (data written) or non-data (nil).
func ataCommand(f *os.File, cmd, features, count uint8, data []byte, in bool, timeout time.Duration) error {
	cdb := make([]byte, 16)
	cdb[0] = 0x85
	dir := int32(sgDxferNone)
	switch {
	case data == nil:
		cdb[1] = 3 << 1 // non-data
		cdb[2] = 0x20   // CK_COND: return the registers
	case in:
		cdb[1] = 4 << 1 // PIO data-in
		cdb[2] = 0x0e   // T_DIR from the device, BYT_BLOK, length in the sector count
		dir = sgDxferFromDv
	default:
		cdb[1] = 5 << 1 // PIO data-out
		cdb[2] = 0x06
		dir = sgDxferToDev
	}
	cdb[4], cdb[6], cdb[14] = features, count, cmd
	sense := make([]byte, 32)
	h := sgIOHdr{InterfaceID: 'S', DxferDirection: dir, CmdLen: 16, MxSbLen: uint8(len(sense)),
		Cmdp: uintptr(unsafe.Pointer(&cdb[0])), Sbp: uintptr(unsafe.Pointer(&sense[0])),
		Timeout: uint32(timeout / time.Millisecond)}
	if len(data) > 0 {
		h.Dxferp, h.DxferLen = uintptr(unsafe.Pointer(&data[0])), uint32(len(data))
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), sgIO, uintptr(unsafe.Pointer(&h))); e != 0 {
		return fmt.Errorf("SG_IO: %w", e)
	}
	if h.HostStatus != 0 || h.DriverStatus&^0x08 != 0 {
		return fmt.Errorf("ATA command 0x%02x: host status %d, driver status %d", cmd, h.HostStatus, h.DriverStatus)
	}
	// With CK_COND the drive's registers come back as sense data (ATA
	// Status Return descriptor); the status register's ERR bit says the
	// command was aborted.
	if h.SbLenWr >= 22 && sense[8] == 0x09 && sense[21]&0x01 != 0 {
		return fmt.Errorf("ATA command 0x%02x aborted by the drive (error 0x%02x)", cmd, sense[11])
	}
	if h.Status != 0 && !(h.Status == 0x02 && h.SbLenWr >= 22 && sense[8] == 0x09) {
		key := sense[2] & 0x0f // fixed format sense
		if sense[0]&0x7f >= 0x72 {
			key = sense[1] & 0x0f // descriptor format
		}
		return fmt.Errorf("ATA command 0x%02x: SCSI status 0x%02x (sense key 0x%x)", cmd, h.Status, key)
	}
	return nil
}

func ataIdentifyDevice(f *os.File) (ataSecurity, error) {
	b := make([]byte, 512)
	if err := ataCommand(f, ataIdentify, 0, 1, b, true, 10*time.Second); err != nil {
		return ataSecurity{}, err
	}
	return parseATAIdentify(b), nil
}

// ataPassword is the one-time user password the erase sets and then
// uses: the erase clears it, so the drive ends with security disabled.
const ataPassword = "metal-wipe"

func ataPasswordBlock(control uint16) []byte {
	b := make([]byte, 512)
	binary.LittleEndian.PutUint16(b, control)
	copy(b[2:34], ataPassword)
	return b
}

// ataErase runs ATA SECURITY ERASE UNIT on the SATA drive behind f. A
// drive without the feature set, or frozen (the BIOS froze it; a
// suspend/resume or a hot-plug unfreezes it), or locked, or with security
// already enabled by someone else's password, is reported as such with
// errUnsupported so the caller overwrites it instead.
func ataErase(f *os.File) (mechanism, note string, err error) {
	id, err := ataIdentifyDevice(f)
	if err != nil {
		return "", "", fmt.Errorf("%w: not an ATA drive (%v)", errUnsupported, err)
	}
	switch {
	case !id.Supported:
		return "", "", fmt.Errorf("%w: ATA drive %s has no security feature set", errUnsupported, id.Model)
	case id.Frozen:
		return "", "", fmt.Errorf("%w: ATA drive %s is security frozen (the firmware froze it at boot; a suspend and resume or a hot-plug unfreezes it)", errUnsupported, id.Model)
	case id.Locked:
		return "", "", fmt.Errorf("%w: ATA drive %s is security locked by a password metal does not know", errUnsupported, id.Model)
	case id.CountExpired:
		return "", "", fmt.Errorf("%w: ATA drive %s has used up its password attempts (power-cycle it)", errUnsupported, id.Model)
	case id.Enabled:
		return "", "", fmt.Errorf("%w: ATA drive %s has a security password set by someone else", errUnsupported, id.Model)
	}
	if err := ataCommand(f, ataSecuritySetPass, 0, 1, ataPasswordBlock(0), false, 30*time.Second); err != nil {
		return "", "", fmt.Errorf("%w: ATA SECURITY SET PASSWORD: %v", errUnsupported, err)
	}
	control, mech, what, t := uint16(0), "ata-security-erase", "normal", id.EraseTime
	if id.Enhanced {
		control, mech, what, t = 1<<1, "ata-security-erase-enhanced", "enhanced", id.EnhancedTime
	}
	if t == 0 {
		t = 8 * time.Hour
	}
	err = ataCommand(f, ataSecurityErasePrep, 0, 0, nil, false, 30*time.Second)
	if err == nil {
		err = ataCommand(f, ataSecurityEraseUnit, 0, 1, ataPasswordBlock(control), false, 2*t)
	}
	if err != nil {
		// Leave no password behind on a drive that refused the erase.
		_ = ataCommand(f, ataSecurityDisablePwd, 0, 1, ataPasswordBlock(0), false, 30*time.Second)
		return "", "", fmt.Errorf("ATA SECURITY ERASE UNIT: %w", err)
	}
	return mech, fmt.Sprintf("erased by the drive: ATA SECURITY ERASE UNIT (%s)", what), nil
}
