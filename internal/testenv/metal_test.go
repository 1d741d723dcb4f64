package testenv

import (
	"os/exec"
	"strings"
	"testing"
)

func TestBuildMetal(t *testing.T) {
	Long(t, "a build of metal")
	bin, err := BuildMetal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("metal version: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "metal") {
		t.Errorf("metal version printed %q", out)
	}
}
