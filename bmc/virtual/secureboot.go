package virtual

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"unicode/utf16"
)

// SecureBoot is the UEFI Secure Boot state of a machine's firmware.
type SecureBoot struct {
	// Enable: the firmware enforces Secure Boot when it boots (a platform
	// key is enrolled and Secure Boot is not switched off).
	Enable bool
	// Setup: no platform key is enrolled (Setup Mode), so nothing is
	// enforced.
	Setup bool
}

// SecureBootReporter is a Machine that can tell its firmware's Secure
// Boot state; the Server serves its system's SecureBoot resource. ok is
// false for a machine with no UEFI firmware to ask (SeaBIOS), which has
// no such resource.
type SecureBootReporter interface {
	SecureBoot(ctx context.Context) (sb SecureBoot, ok bool, err error)
}

// SecureBoot reads the Secure Boot state from the machine's UEFI variable
// store: the OVMF_VARS copy its command line maps as the second pflash
// drive, which the firmware itself reads at every boot and writes when
// keys change. A machine without one (SeaBIOS, or a QEMU this BMC only
// attaches to) has none to tell.
func (m *QEMU) SecureBoot(context.Context) (SecureBoot, bool, error) {
	vars := pflashVars(m.cfg.Command)
	if vars == "" {
		return SecureBoot{}, false, nil
	}
	sb, err := ReadOVMFVars(vars)
	if err != nil {
		return SecureBoot{}, false, fmt.Errorf("machine %s: %w", m.cfg.Name, err)
	}
	return sb, true, nil
}

// pflashVars returns the file of the variable store in a QEMU command
// line: the drive with if=pflash and unit=1, else the second pflash drive
// (QEMU numbers them in order).
func pflashVars(cmd []string) string {
	var files []string
	for i := 0; i+1 < len(cmd); i++ {
		if cmd[i] != "-drive" {
			continue
		}
		opts := map[string]string{}
		for _, kv := range strings.Split(cmd[i+1], ",") {
			k, v, _ := strings.Cut(kv, "=")
			opts[k] = v
		}
		if opts["if"] != "pflash" {
			continue
		}
		if opts["unit"] == "1" {
			return opts["file"]
		}
		if opts["unit"] == "" {
			files = append(files, opts["file"])
		}
	}
	if len(files) == 2 {
		return files[1]
	}
	return ""
}

// UEFI variable store layout (EDK II's VariableFormat.h and
// AuthenticatedVariableFormat.h), as OVMF keeps it in its VARS image.
const (
	fvSignatureOffset = 40 // "_FVH" in EFI_FIRMWARE_VOLUME_HEADER
	fvHeaderLenOffset = 48 // its HeaderLength (uint16)
	varStoreHeaderLen = 28 // VARIABLE_STORE_HEADER
	authVarHeaderLen  = 60 // AUTHENTICATED_VARIABLE_HEADER
	varStartID        = 0x55aa
	varAdded          = 0x3f // State: VAR_ADDED
	varInDeleted      = 0xfe // State bit cleared while being replaced
)

var (
	// gEfiAuthenticatedVariableGuid: a store of authenticated variables,
	// the kind a Secure Boot capable OVMF keeps.
	authVarStoreGUID = guid("aaf32c78-947b-439a-a180-2e144ec37792")
	// EFI_GLOBAL_VARIABLE: PK, KEK, SecureBoot, ...
	globalVarGUID = guid("8be4df61-93ca-11d2-aa0d-00e098032b8c")
	// OVMF's own Secure Boot switch (SecureBootEnable, 1 by default).
	secureBootEnableGUID = guid("f0a30bc7-af08-4556-99c4-001009c93a44")
)

// ReadOVMFVars reads the Secure Boot state of a UEFI variable store:
// enforced when a platform key (PK) is enrolled and OVMF's
// SecureBootEnable, if set, is not 0. Debian's OVMF_VARS_4M.ms.fd has
// Microsoft's keys (and a PK) enrolled; OVMF_VARS_4M.fd has none.
func ReadOVMFVars(path string) (SecureBoot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return SecureBoot{}, fmt.Errorf("read UEFI variables: %w", err)
	}
	vars, err := parseVarStore(b)
	if err != nil {
		return SecureBoot{}, fmt.Errorf("UEFI variables %s: %w", path, err)
	}
	pk := len(vars[varKey{globalVarGUID, "PK"}]) > 0
	enable := true
	if v, ok := vars[varKey{secureBootEnableGUID, "SecureBootEnable"}]; ok && len(v) > 0 {
		enable = v[0] != 0
	}
	return SecureBoot{Enable: pk && enable, Setup: !pk}, nil
}

type varKey struct {
	guid [16]byte
	name string
}

// parseVarStore returns the live variables of an OVMF VARS image.
func parseVarStore(b []byte) (map[varKey][]byte, error) {
	if len(b) < fvHeaderLenOffset+2 || string(b[fvSignatureOffset:fvSignatureOffset+4]) != "_FVH" {
		return nil, errors.New("not a firmware volume (no _FVH signature)")
	}
	off := int(binary.LittleEndian.Uint16(b[fvHeaderLenOffset:]))
	if off+varStoreHeaderLen > len(b) {
		return nil, errors.New("truncated variable store header")
	}
	if !bytes.Equal(b[off:off+16], authVarStoreGUID[:]) {
		return nil, errors.New("not an authenticated variable store (a firmware without Secure Boot)")
	}
	size := int(binary.LittleEndian.Uint32(b[off+16:]))
	end := min(off+size, len(b))
	vars := map[varKey][]byte{}
	for p := off + varStoreHeaderLen; p+authVarHeaderLen <= end; {
		h := b[p : p+authVarHeaderLen]
		if binary.LittleEndian.Uint16(h) != varStartID {
			break
		}
		state := h[2]
		nameSize := int(binary.LittleEndian.Uint32(h[36:]))
		dataSize := int(binary.LittleEndian.Uint32(h[40:]))
		var g [16]byte
		copy(g[:], h[44:60])
		name := p + authVarHeaderLen
		data := name + nameSize
		next := data + dataSize
		if nameSize < 0 || dataSize < 0 || next > end {
			return nil, fmt.Errorf("variable at %#x runs past the store", p)
		}
		if state == varAdded || state == varAdded&varInDeleted {
			vars[varKey{g, ucs2(b[name:data])}] = b[data:next]
		}
		p = (next + 3) &^ 3 // headers are 4-byte aligned
	}
	return vars, nil
}

// ucs2 decodes a NUL-terminated UTF-16LE variable name.
func ucs2(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// guid returns the on-disk (mixed-endian) bytes of an EFI GUID: Data1,
// Data2 and Data3 little-endian, Data4 as written.
func guid(s string) [16]byte {
	raw, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(raw) != 16 {
		panic("bad GUID " + s)
	}
	var g [16]byte
	for i, j := range []int{3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15} {
		g[i] = raw[j]
	}
	return g
}

// getSecureBoot serves the system's SecureBoot resource.
func (s *Server) getSecureBoot(w http.ResponseWriter, r *http.Request, sys *system) {
	sb, ok, err := sys.secureBoot(r)
	if err != nil {
		s.machineError(w, sys, "read secure boot state", err)
		return
	}
	if !ok {
		redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no UEFI Secure Boot on "+sys.spec.Name)
		return
	}
	sys.mu.Lock()
	power, err := sys.spec.Machine.PowerState(r.Context())
	sys.mu.Unlock()
	if err != nil {
		s.machineError(w, sys, "read power state", err)
		return
	}
	// The boot running now was made with the state its firmware read at
	// power on; a machine that is off runs none.
	current := "Disabled"
	if sb.Enable && power == PowerOn {
		current = "Enabled"
	}
	mode := "UserMode"
	if sb.Setup {
		mode = "SetupMode"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.type":           "#SecureBoot.v1_1_0.SecureBoot",
		"@odata.id":             "/redfish/v1/Systems/" + sys.spec.Name + "/SecureBoot",
		"Id":                    "SecureBoot",
		"Name":                  "UEFI Secure Boot",
		"SecureBootEnable":      sb.Enable,
		"SecureBootCurrentBoot": current,
		"SecureBootMode":        mode,
	})
}

// secureBoot asks the machine for its Secure Boot state; ok is false when
// it has none to tell.
func (sys *system) secureBoot(r *http.Request) (SecureBoot, bool, error) {
	rep, ok := sys.spec.Machine.(SecureBootReporter)
	if !ok {
		return SecureBoot{}, false, nil
	}
	sys.mu.Lock()
	defer sys.mu.Unlock()
	return rep.SecureBoot(r.Context())
}
