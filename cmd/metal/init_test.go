package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInitLab: metal init writes a site for the QEMU lab's network that
// metal validate and metal plan take as it is, and does not overwrite it
// without --force.
func TestInitLab(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "site.hcl")
	args := []string{"init", "--interface", "mtl-br0", "--subnet", "192.0.2.0/24", "--name", "lab", "-o", out,
		"--state", "file://state.db"}
	code, stdout, stderr := metal(t, nil, args...)
	if code != 0 {
		t.Fatalf("metal init: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "valid") {
		t.Errorf("metal init said %q", stdout)
	}
	if code, _, stderr := metal(t, nil, "validate", out); code != 0 {
		t.Errorf("metal validate of the written site: exit %d: %s", code, stderr)
	}
	if code, _, stderr := metal(t, nil, "plan", out); code != 0 {
		t.Errorf("metal plan of the written site: exit %d: %s", code, stderr)
	}
	if code, _, _ := metal(t, nil, "fmt", "-check", out); code != 0 {
		t.Error("the written site is not formatted")
	}
	if code, _, stderr := metal(t, nil, args...); code == 0 || !strings.Contains(stderr, "--force") {
		t.Errorf("a second metal init: exit %d, %q; want a refusal naming --force", code, stderr)
	}
	if code, _, stderr := metal(t, nil, append(args, "--force", "--scan", "--bmc-subnet", "127.0.0.1/32", "--scan-timeout", "300ms")...); code != 0 {
		t.Errorf("metal init --force --scan: exit %d: %s", code, stderr)
	}
	b, _ := os.ReadFile(out)
	if !strings.Contains(string(b), "A scan of 127.0.0.1/32") {
		t.Errorf("the scanned site does not say what was scanned:\n%s", b)
	}
}

func TestInitUsage(t *testing.T) {
	tests := map[string]struct {
		args []string
		want string
	}{
		"nothing":          {[]string{"init", "-o", "-"}, "give the boot network"},
		"a bad subnet":     {[]string{"init", "--subnet", "10.0.0/24", "--interface", "x", "-o", "-"}, "--subnet"},
		"a bad pool":       {[]string{"init", "--subnet", "10.0.0.0/24", "--interface", "x", "--pool", "10.0.0.5", "-o", "-"}, "START-END"},
		"an unknown nic":   {[]string{"init", "--interface", "no-such-nic0", "-o", "-"}, "no IPv4 address here"},
		"a scan too large": {[]string{"init", "--subnet", "10.0.0.0/24", "--interface", "x", "--scan", "--bmc-subnet", "10.0.0.0/8", "-o", "-"}, "more than"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			code, _, stderr := metal(t, nil, tc.args...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, %q; want exit 2 saying %q", code, stderr, tc.want)
			}
		})
	}
}
