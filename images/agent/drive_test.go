package agent

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestParseNVMeIdentify reads the fields the erase decides by from
// Identify Controller and Identify Namespace data laid out as the NVMe
// base specification places them.
func TestParseNVMeIdentify(t *testing.T) {
	ctrl := make([]byte, 4096)
	copy(ctrl[4:], "SN-0001             ")
	copy(ctrl[24:], "QEMU NVMe Ctrl")
	binary.LittleEndian.PutUint16(ctrl[256:], 1<<1)  // OACS: Format NVM
	binary.LittleEndian.PutUint32(ctrl[328:], 0b011) // SANICAP: crypto, block
	ctrl[524] = 0b101                                // FNA: all namespaces, crypto
	want := nvmeController{FormatNVM: true, FormatAllNS: true, Crypto: true, SanitizeCrypto: true, SanitizeBlock: true,
		Serial: "SN-0001", Model: "QEMU NVMe Ctrl"}
	if d := cmp.Diff(want, parseNVMeController(ctrl)); d != "" {
		t.Errorf("controller (-want +got):\n%s", d)
	}
	ns := make([]byte, 4096)
	ns[26] = 0x10 | 0x20 | 0x03 // FLBAS: extended metadata, format 16+3
	ns[29] = 0x09               // DPS: type 1, first bytes
	ns[33] = 0x01               // DLFEAT: deallocated blocks read as zeros
	if d := cmp.Diff(nvmeNamespace{LBAF: 19, MetaExtended: true, DeallocZeroes: true, DPS: 9}, parseNVMeNamespace(ns)); d != "" {
		t.Errorf("namespace (-want +got):\n%s", d)
	}
}

// TestParseATAIdentify reads the security word as hdparm reports it.
func TestParseATAIdentify(t *testing.T) {
	tests := map[string]struct {
		w82, w128, w89 uint16
		want           string
		frozen         bool
	}{
		"no feature set":     {w82: 0, w128: 0, want: "no ATA security feature set"},
		"ready":              {w82: 2, w128: 0x21, w89: 30, want: "supported, not enabled, not locked, not frozen"},
		"frozen by the BIOS": {w82: 2, w128: 0x09, want: "frozen", frozen: true},
		"locked":             {w82: 2, w128: 0x07, want: "enabled, locked"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b := make([]byte, 512)
			binary.LittleEndian.PutUint16(b[2*82:], tc.w82)
			binary.LittleEndian.PutUint16(b[2*128:], tc.w128)
			binary.LittleEndian.PutUint16(b[2*89:], tc.w89)
			copy(b[54:], "EQUMH RADDSI K") // "QEMU HARDDISK", byte pairs swapped
			s := parseATAIdentify(b)
			if s.State() != tc.want || s.Frozen != tc.frozen || s.Model != "QEMU HARDDISK" {
				t.Errorf("state %q frozen %v model %q; want %q frozen %v", s.State(), s.Frozen, s.Model, tc.want, tc.frozen)
			}
			if tc.w89 != 0 && s.EraseTime != time.Duration(tc.w89)*2*time.Minute {
				t.Errorf("erase time %v", s.EraseTime)
			}
		})
	}
}
