// Package testenv tells a test whether the host may give it what it needs
// beyond Go: root, network namespaces, QEMU, a Debian package. `make unit`
// runs the tests with -short, and every such test skips there; `make test`
// installs the packages and runs them all as root.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// Integration skips t in a -short run (make unit): it needs the host
// (what names why: namespaces, QEMU, a Debian package's program).
func Integration(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs %s: not in a -short run (make unit)", what)
	}
}

// Root skips t in a -short run and when not run as root: it needs root
// (network namespaces, raw sockets, privileged ports).
func Root(t testing.TB, what string) {
	t.Helper()
	Integration(t, what)
	if os.Geteuid() != 0 {
		t.Skipf("needs root for %s: run as root (make test does)", what)
	}
}

// Long skips t in a -short run: it needs nothing of the host but runs for
// long (whole metal processes started, killed and started again, a binary
// built for them). make test runs it.
func Long(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("runs %s: not in a -short run (make unit)", what)
	}
}

// Tool returns the path of program, which the Debian package debianPackage
// provides; it skips t in a -short run and fails it, naming the package to
// install, when the program is missing.
func Tool(t testing.TB, program, debianPackage string) string {
	t.Helper()
	Integration(t, program+" (Debian "+debianPackage+")")
	p, err := exec.LookPath(program)
	if err != nil {
		t.Fatalf("this test needs %s: install the Debian package %s (apt-get install %s)", program, debianPackage, debianPackage)
	}
	return p
}
