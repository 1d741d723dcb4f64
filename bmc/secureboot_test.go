package bmc_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/bmc/internal/testpeer"
	"github.com/metal-dev/metal/bmc/virtual"
	"github.com/metal-dev/metal/internal/qemu"
	"github.com/metal-dev/metal/internal/syncbuf"
)

// TestSecureBootOfQEMU reads, through the real client, the SecureBoot
// resource of virtual BMCs whose QEMU machines boot OVMF's Secure Boot
// build with Debian's variable stores: the one with Microsoft's keys
// enrolled is enabled (and, once powered on, on in the current boot), the
// one without keys is in Setup Mode and off, and a SeaBIOS machine has no
// SecureBoot resource at all.
func TestSecureBootOfQEMU(t *testing.T) {
	t.Parallel()
	if err := qemu.CheckTools(qemu.Tool{Path: qemu.OVMFVarsMS, Package: "ovmf", File: true}); err != nil {
		t.Skip(err)
	}
	for name, tc := range map[string]struct {
		vars    string // the machine's variable store's source; "" SeaBIOS
		want    bmc.SecureBoot
		wantErr error
	}{
		"Microsoft's keys": {vars: qemu.OVMFVarsMS, want: bmc.SecureBoot{Enable: true, CurrentBoot: true, Mode: "UserMode"}},
		"no keys":          {vars: qemu.OVMFVars, want: bmc.SecureBoot{Mode: "SetupMode"}},
		"SeaBIOS":          {wantErr: bmc.ErrUnsupported},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir, err := os.MkdirTemp("", "vbmc") // short: the QMP socket's path
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			cmd := testpeer.QEMUCommand(t)
			if tc.vars != "" {
				vars := filepath.Join(dir, "vars.fd")
				data, err := os.ReadFile(tc.vars)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(vars, data, 0o600); err != nil {
					t.Fatal(err)
				}
				cmd = append(cmd, qemu.SecureBootArgs(vars)...)
			}
			log := testpeer.NewLog(t)
			out := &syncbuf.Buffer{}
			vm, err := virtual.NewQEMU(virtual.QEMUConfig{Name: "vm-1", QMPSocket: filepath.Join(dir, "qmp.sock"),
				Command: cmd, Output: out, Log: log.Logger})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				vm.Close()
				if t.Failed() {
					t.Logf("qemu:\n%s", out.String())
				}
			})
			url, _ := testpeer.VBMC(t, false, "admin", testPassword, log.Logger, virtual.MachineSpec{Name: "vm-1", Machine: vm})
			c, err := bmc.New(bmc.Config{Machine: "vm-1", Protocol: "redfish", Address: url, System: "vm-1",
				Username: "admin", Password: testPassword, Timeout: 10 * time.Second, PowerWait: 20 * time.Second, Retries: 1}, log.Logger)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()

			off, err := c.SecureBoot(ctx)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("SecureBoot: %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				return
			}
			// Off, the machine runs no boot: none has Secure Boot on.
			wantOff := tc.want
			wantOff.CurrentBoot = false
			if diff := cmp.Diff(wantOff, off); diff != "" {
				t.Errorf("powered off (-want +got):\n%s", diff)
			}
			if err := c.Power(ctx, bmc.ActionOn); err != nil {
				t.Fatal(err)
			}
			on, err := c.SecureBoot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, on); diff != "" {
				t.Errorf("powered on (-want +got):\n%s", diff)
			}
		})
	}
}
