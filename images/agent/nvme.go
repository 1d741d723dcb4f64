package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// nvmeAdminCmd is Linux's struct nvme_admin_cmd (linux/nvme_ioctl.h), the
// argument of NVME_IOCTL_ADMIN_CMD: one admin command passed through to
// the controller.
type nvmeAdminCmd struct {
	Opcode      uint8
	Flags       uint8
	Rsvd1       uint16
	NSID        uint32
	Cdw2, Cdw3  uint32
	Metadata    uint64
	Addr        uint64
	MetadataLen uint32
	DataLen     uint32
	Cdw10       uint32
	Cdw11       uint32
	Cdw12       uint32
	Cdw13       uint32
	Cdw14       uint32
	Cdw15       uint32
	TimeoutMs   uint32
	Result      uint32
}

const (
	nvmeIoctlID       = 0x4e40     // _IO('N', 0x40): the namespace ID of a block device
	nvmeIoctlAdminCmd = 0xc0484e41 // _IOWR('N', 0x41, struct nvme_admin_cmd)

	nvmeOpGetLogPage = 0x02
	nvmeOpIdentify   = 0x06
	nvmeOpFormat     = 0x80
	nvmeOpSanitize   = 0x84

	nvmeLogSanitize = 0x81

	// nvmeEraseTimeout bounds one Format NVM: the controller answers when
	// the erase is done, which on a large drive takes a while.
	nvmeEraseTimeout = 4 * time.Hour
)

// nvmeController is what the agent needs of an NVMe Identify Controller.
type nvmeController struct {
	// FormatNVM: OACS bit 1. FormatAllNS: FNA bit 0 (a format covers every
	// namespace); EraseAllNS: FNA bit 1 (a secure erase does); Crypto: FNA
	// bit 2 (Format NVM can erase cryptographically).
	FormatNVM, FormatAllNS, EraseAllNS, Crypto bool
	// SanitizeCrypto, SanitizeBlock, SanitizeOverwrite: SANICAP bits 0-2.
	SanitizeCrypto, SanitizeBlock, SanitizeOverwrite bool
	Serial, Model                                    string
}

func parseNVMeController(b []byte) nvmeController {
	oacs := binary.LittleEndian.Uint16(b[256:])
	sanicap := binary.LittleEndian.Uint32(b[328:])
	fna := b[524]
	return nvmeController{
		FormatNVM: oacs&(1<<1) != 0, FormatAllNS: fna&1 != 0, EraseAllNS: fna&2 != 0, Crypto: fna&4 != 0,
		SanitizeCrypto: sanicap&1 != 0, SanitizeBlock: sanicap&2 != 0, SanitizeOverwrite: sanicap&4 != 0,
		Serial: strings.Trim(string(b[4:24]), " \x00"), Model: strings.Trim(string(b[24:64]), " \x00"),
	}
}

// nvmeNamespace is what the agent needs of an NVMe Identify Namespace:
// the LBA format in use (to format to the same), and whether deallocated
// blocks read back as zeros (DLFEAT bits 2:0 = 001b).
type nvmeNamespace struct {
	LBAF          uint32
	MetaExtended  bool
	DeallocZeroes bool
	// DPS is the protection information in use (bits 2:0 type, bit 3 in
	// the first bytes), kept through the format.
	DPS uint8
}

func parseNVMeNamespace(b []byte) nvmeNamespace {
	flbas := b[26]
	return nvmeNamespace{
		// FLBAS bits 3:0 index the format; bits 6:5 extend it past 16.
		LBAF:          uint32(flbas&0x0f) | uint32(flbas>>5&0x03)<<4,
		MetaExtended:  flbas&0x10 != 0,
		DeallocZeroes: b[33]&0x07 == 1,
		DPS:           b[29] & 0x0f,
	}
}

// nvmeSanitizeState is the Sanitize Status log's SSTAT bits 2:0.
type nvmeSanitizeState uint16

const (
	sanitizeNever      nvmeSanitizeState = 0
	sanitizeDone       nvmeSanitizeState = 1
	sanitizeInProgress nvmeSanitizeState = 2
	sanitizeFailed     nvmeSanitizeState = 3
	sanitizeDoneNoDeal nvmeSanitizeState = 4
)

func (s nvmeSanitizeState) String() string {
	switch s {
	case sanitizeNever:
		return "never sanitized"
	case sanitizeDone:
		return "sanitized"
	case sanitizeInProgress:
		return "sanitize in progress"
	case sanitizeFailed:
		return "last sanitize failed"
	case sanitizeDoneNoDeal:
		return "sanitized (no-deallocate)"
	}
	return fmt.Sprintf("sanitize state %d", uint16(s))
}

// nvmeStatus is a controller's answer other than success: the status
// field of the completion (ioctl's positive return).
type nvmeStatus int

func (s nvmeStatus) Error() string {
	sct, sc := int(s)>>8&0x7, int(s)&0xff
	what := ""
	switch {
	case sct == 0 && sc == 0x01:
		what = " (invalid command opcode: not supported)"
	case sct == 0 && sc == 0x02:
		what = " (invalid field in command: not supported)"
	case sct == 0 && sc == 0x1d:
		what = " (sanitize failed)"
	case sct == 0 && sc == 0x1e:
		what = " (sanitize in progress)"
	case sct == 1 && sc == 0x0a:
		what = " (invalid format)"
	case sct == 1 && sc == 0x20:
		what = " (namespace is write protected)"
	}
	return fmt.Sprintf("NVMe status 0x%03x%s", int(s)&0x7ff, what)
}

// nvmeAdmin passes one admin command to the controller behind f (an NVMe
// namespace's block device).
func nvmeAdmin(f *os.File, c *nvmeAdminCmd, data []byte) error {
	if len(data) > 0 {
		c.Addr = uint64(uintptr(unsafe.Pointer(&data[0])))
		c.DataLen = uint32(len(data))
	}
	r, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), nvmeIoctlAdminCmd, uintptr(unsafe.Pointer(c)))
	if e != 0 {
		return e
	}
	if r != 0 {
		return nvmeStatus(r)
	}
	return nil
}

// nvmeNSID is the namespace ID of an NVMe block device; it fails on any
// other device, which is how the agent tells an NVMe disk.
func nvmeNSID(f *os.File) (uint32, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), nvmeIoctlID, 0)
	if e != 0 {
		return 0, e
	}
	return uint32(r), nil
}

func nvmeIdentify(f *os.File, nsid, cns uint32) ([]byte, error) {
	buf, free, err := alignedBuffer(4096)
	if err != nil {
		return nil, err
	}
	defer free()
	if err := nvmeAdmin(f, &nvmeAdminCmd{Opcode: nvmeOpIdentify, NSID: nsid, Cdw10: cns}, buf); err != nil {
		return nil, fmt.Errorf("identify (CNS %d): %w", cns, err)
	}
	return append([]byte(nil), buf...), nil
}

// nvmeSanitizeStatus reads the Sanitize Status log page's state.
func nvmeSanitizeStatus(f *os.File) (nvmeSanitizeState, error) {
	buf, free, err := alignedBuffer(4096)
	if err != nil {
		return 0, err
	}
	defer free()
	const n = 512 // bytes of the log read; NUMDL is dwords less one
	c := nvmeAdminCmd{Opcode: nvmeOpGetLogPage, NSID: 0xffffffff, Cdw10: nvmeLogSanitize | (n/4-1)<<16}
	if err := nvmeAdmin(f, &c, buf[:n]); err != nil {
		return 0, fmt.Errorf("sanitize status log: %w", err)
	}
	return nvmeSanitizeState(binary.LittleEndian.Uint16(buf[2:]) & 0x7), nil
}

// errUnsupported is a drive that cannot do a device erase; the caller
// falls back to the next way and says why.
var errUnsupported = errors.New("not supported by the drive")

// nvmeErase erases the NVMe namespace behind f by the strongest means
// its controller offers: Sanitize (block erase, else crypto erase: the
// whole controller, caches included), else Format NVM with a secure erase
// setting (user data erase, else crypto erase). It returns the mechanism
// used and a note for the record. A device that is not NVMe, or an NVMe
// drive that offers neither, returns an error wrapping errUnsupported.
func nvmeErase(ctx context.Context, f *os.File) (mechanism, note string, err error) {
	nsid, err := nvmeNSID(f)
	if err != nil {
		return "", "", fmt.Errorf("%w: not an NVMe namespace (%v)", errUnsupported, err)
	}
	cb, err := nvmeIdentify(f, 0, 1)
	if err != nil {
		return "", "", err
	}
	ctrl := parseNVMeController(cb)
	nb, err := nvmeIdentify(f, nsid, 0)
	if err != nil {
		return "", "", err
	}
	ns := parseNVMeNamespace(nb)

	if ctrl.SanitizeBlock || ctrl.SanitizeCrypto {
		state, err := nvmeSanitizeStatus(f)
		if err != nil {
			return "", "", err
		}
		if state == sanitizeInProgress {
			return "", "", errors.New("NVMe: a sanitize is already in progress (started before this wipe); wait for it to end, then wipe again")
		}
		sanact, mech := uint32(0b010), "nvme-sanitize-block"
		if !ctrl.SanitizeBlock {
			sanact, mech = 0b100, "nvme-sanitize-crypto"
		}
		// AUSE (bit 3) lets a failed sanitize be exited, so a drive that
		// fails stays usable for an overwrite.
		if err := nvmeAdmin(f, &nvmeAdminCmd{Opcode: nvmeOpSanitize, Cdw10: sanact | 1<<3}, nil); err != nil {
			return "", "", fmt.Errorf("NVMe sanitize: %w", err)
		}
		if err := nvmeWaitSanitize(ctx, f); err != nil {
			return "", "", err
		}
		return mech, fmt.Sprintf("erased by the drive: NVMe Sanitize (%s erase) of the whole controller; drive was %s before", strings.TrimPrefix(mech, "nvme-sanitize-"), state), nil
	}
	if !ctrl.FormatNVM {
		return "", "", fmt.Errorf("%w: NVMe controller %s has neither Sanitize nor Format NVM", errUnsupported, ctrl.Model)
	}
	ses, mech := uint32(1), "nvme-format-user-data"
	if !ns.DeallocZeroes && ctrl.Crypto {
		// Without zeros promised either way, the crypto erase is the
		// stronger of the two.
		ses, mech = 2, "nvme-format-crypto"
	}
	target := nsid
	scope := fmt.Sprintf("namespace %d", nsid)
	if ctrl.FormatAllNS || ctrl.EraseAllNS {
		target, scope = 0xffffffff, "every namespace (the controller formats them together)"
	}
	cdw10 := ns.LBAF&0x0f | (ns.LBAF>>4&0x3)<<12 | ses<<9
	if ns.MetaExtended {
		cdw10 |= 1 << 4
	}
	cdw10 |= uint32(ns.DPS&0x7)<<5 | uint32(ns.DPS>>3&1)<<8
	c := nvmeAdminCmd{Opcode: nvmeOpFormat, NSID: target, Cdw10: cdw10, TimeoutMs: uint32(nvmeEraseTimeout / time.Millisecond)}
	if err := nvmeAdmin(f, &c, nil); err != nil {
		var st nvmeStatus
		if errors.As(err, &st) && ses == 2 {
			// Crypto erase refused: the user data erase is still a purge.
			c.Cdw10, mech = c.Cdw10&^(7<<9)|1<<9, "nvme-format-user-data"
			err = nvmeAdmin(f, &c, nil)
		}
		if err != nil {
			return "", "", fmt.Errorf("NVMe Format NVM (secure erase setting %d) of %s: %w", ses, scope, err)
		}
	}
	what := "user data erase"
	if mech == "nvme-format-crypto" {
		what = "cryptographic erase"
	}
	return mech, fmt.Sprintf("erased by the drive: NVMe Format NVM (%s) of %s", what, scope), nil
}

// nvmeWaitSanitize polls the Sanitize Status log until the sanitize the
// agent started ends.
func nvmeWaitSanitize(ctx context.Context, f *os.File) error {
	for {
		state, err := nvmeSanitizeStatus(f)
		if err != nil {
			return err
		}
		switch state {
		case sanitizeDone, sanitizeDoneNoDeal:
			return nil
		case sanitizeFailed:
			return errors.New("NVMe sanitize failed: the drive is in its sanitize-failure state; a later wipe exits it (AUSE) and tries again")
		case sanitizeInProgress:
		default:
			return fmt.Errorf("NVMe sanitize: unexpected state after the command: %s", state)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("NVMe sanitize in progress (it continues in the drive): %w", ctx.Err())
		case <-time.After(2 * time.Second):
		}
	}
}
