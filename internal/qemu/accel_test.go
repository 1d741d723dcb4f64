package qemu

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/internal/syncbuf"
)

func needQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(Program); err != nil {
		t.Fatalf("%s is needed for this test: apt-get install -y qemu-system-x86", Program)
	}
}

// The probe guest boots and prints its marker under TCG, which every host
// runs: the payload itself is sound.
func TestProbeTCG(t *testing.T) {
	needQEMU(t)
	start := time.Now()
	if err := Probe(context.Background(), "", TCG, time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("probe guest under TCG printed its marker in %v", time.Since(start))
}

// fakeKVM is a KVM device that opens (a plain file) and an emulator that
// behaves as QEMU does on a host whose KVM cannot run guests: silent, or
// exiting with an error.
func fakeKVM(t *testing.T, script string) Options {
	dir := t.TempDir()
	dev := filepath.Join(dir, "kvm")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	qemu := filepath.Join(dir, "qemu")
	if err := os.WriteFile(qemu, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return Options{Device: dev, QEMU: qemu, Timeout: 2 * time.Second}
}

// fakeKVMLinux is fakeKVM whose probe sector prints its marker, and whose
// Linux kernel (Options.Kernel, a file standing in for one) does what
// kernel says, with $s the serial console's file.
func fakeKVMLinux(t *testing.T, kernel string) Options {
	o := fakeKVM(t, `for x in "$@"; do case "$x" in *path=*) s="${x##*path=}";; esac; done
case "$*" in
*-kernel*) `+kernel+` ;;
*) printf '`+ProbeMarker+`\n' > "$s"; exec sleep 60 ;;
esac`)
	o.Kernel = filepath.Join(t.TempDir(), "vmlinuz")
	if err := os.WriteFile(o.Kernel, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestChoose(t *testing.T) {
	defer func(q time.Duration) { kernelQuiet = q }(kernelQuiet)
	kernelQuiet = time.Second
	tests := map[string]struct {
		opts       func(t *testing.T) Options
		mode       string
		want       string // accelerator chosen; "" means an error
		wantReason string // in the reason (or the error)
	}{
		"no device, auto": {
			opts: func(t *testing.T) Options { return Options{Device: filepath.Join(t.TempDir(), "kvm")} },
			want: TCG, wantReason: "no usable KVM device",
		},
		"silent KVM, auto": {
			opts: func(t *testing.T) Options { return fakeKVM(t, "exec sleep 60") },
			want: TCG, wantReason: "no output from the probe guest within 2s",
		},
		"KVM that fails, auto": {
			opts: func(t *testing.T) Options {
				return fakeKVM(t, "echo 'KVM internal error. Suberror: 1' >&2; exit 1")
			},
			want: TCG, wantReason: "KVM internal error. Suberror: 1",
		},
		"Linux stopped under KVM, auto": {
			// What a nested host did: the sector ran, the kernel stopped
			// at an instruction KVM's emulator lacks.
			opts: func(t *testing.T) Options {
				return fakeKVMLinux(t, "echo 'KVM internal error. Suberror: 1' >&2; echo 'emulation failure' >&2; exec sleep 60")
			},
			want: TCG, wantReason: "KVM runs the probe sector but not a Linux kernel (vmlinuz): QEMU stopped the kernel",
		},
		"Linux silent under KVM, auto": {
			opts: func(t *testing.T) Options { return fakeKVMLinux(t, "exec sleep 60") },
			want: TCG, wantReason: "no output from the kernel within 1s",
		},
		"Linux silent under KVM, kvm asked for": {
			opts: func(t *testing.T) Options { return fakeKVMLinux(t, "exec sleep 60") },
			mode: KVM, wantReason: "not a Linux kernel",
		},
		"Linux runs under KVM, auto": {
			opts: func(t *testing.T) Options {
				return fakeKVMLinux(t, `printf 'Linux version 6.1\nKernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n' > "$s"; exit 0`)
			},
			want: KVM, wantReason: "a probe guest and a Linux kernel ran under KVM",
		},
		"silent KVM, kvm asked for": {
			opts: func(t *testing.T) Options { return fakeKVM(t, "exec sleep 60") },
			mode: KVM, wantReason: "KVM asked for, but",
		},
		"tcg asked for": {
			opts: func(t *testing.T) Options { return fakeKVM(t, "exit 1") },
			mode: TCG, want: TCG, wantReason: "TCG asked for",
		},
		"working KVM, auto": {
			// A device that opens and an emulator whose guest prints the
			// marker: TCG standing in for a KVM that works.
			opts: func(t *testing.T) Options {
				needQEMU(t)
				o := fakeKVM(t, `a=""; for x in "$@"; do [ "$x" = kvm ] && x=tcg; a="$a $x"; done; exec `+Program+` $a`)
				o.Timeout = time.Minute
				return o
			},
			want: KVM, wantReason: "a probe guest ran under KVM",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var logs syncbuf.Buffer
			o := tc.opts(t)
			o.Mode = tc.mode
			o.Log = slog.New(slog.NewTextHandler(&logs, nil))
			start := time.Now()
			c, err := Choose(context.Background(), o)
			if tc.want == "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantReason) {
					t.Fatalf("Choose = %+v, %v; want an error with %q", c, err, tc.wantReason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Accel != tc.want || !strings.Contains(c.Reason, tc.wantReason) {
				t.Fatalf("Choose = %+v; want %s because %q", c, tc.want, tc.wantReason)
			}
			// The fallback says why, in the log.
			if tc.want == TCG && !strings.Contains(logs.String(), "reason=") {
				t.Errorf("no reason logged:\n%s", logs.String())
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("choosing took %v", d)
			}
			t.Logf("%s: %s (%v)\n%s", c.Accel, c.Reason, time.Since(start).Round(time.Millisecond), logs.String())
		})
	}
}
