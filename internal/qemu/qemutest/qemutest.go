// Package qemutest gives tests that start QEMU the accelerator the lab
// would use on this host: one probe per test binary (qemu.Choose), so a
// /dev/kvm that opens but runs no guest falls back to TCG in tests too.
package qemutest

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/metal-dev/metal/internal/qemu"
	"github.com/metal-dev/metal/internal/qemu/testkernel"
)

// EnvAccel overrides the mode (auto, kvm, tcg) for every test.
const EnvAccel = "METAL_TEST_ACCEL"

var (
	once   sync.Once
	choice qemu.Choice
	err    error
)

// Accel returns "kvm" or "tcg" for this host, probing once per process;
// it fails the test if METAL_TEST_ACCEL=kvm and KVM runs no guest. KVM
// must also run the kernel the tests boot (testkernel.Kernel), where one can
// be had: a nested host ran the probe sector under KVM and then stopped
// every Linux guest at once, and each test waited out its timeout.
func Accel(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		ctx := context.Background()
		o := qemu.Options{Mode: os.Getenv(EnvAccel)}
		if o.Mode != qemu.TCG {
			kernel, kerr := testkernel.Kernel(ctx, testkernel.CacheDir())
			if kerr != nil {
				t.Logf("no kernel for the KVM probe, which only boots its sector: %v", kerr)
			}
			o.Kernel = kernel
		}
		choice, err = qemu.Choose(ctx, o)
	})
	if err != nil {
		t.Fatalf("qemu accelerator: %v", err)
	}
	t.Logf("QEMU runs under %s: %s", choice.Accel, choice.Reason)
	return choice.Accel
}
