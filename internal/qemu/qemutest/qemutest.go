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
)

// EnvAccel overrides the mode (auto, kvm, tcg) for every test.
const EnvAccel = "METAL_TEST_ACCEL"

var (
	once   sync.Once
	choice qemu.Choice
	err    error
)

// Accel returns "kvm" or "tcg" for this host, probing once per process;
// it fails the test if METAL_TEST_ACCEL=kvm and KVM runs no guest.
func Accel(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		choice, err = qemu.Choose(context.Background(), qemu.Options{Mode: os.Getenv(EnvAccel)})
	})
	if err != nil {
		t.Fatalf("qemu accelerator: %v", err)
	}
	t.Logf("QEMU runs under %s: %s", choice.Accel, choice.Reason)
	return choice.Accel
}
