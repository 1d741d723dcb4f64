package bootkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// BuildMetal builds this tree's metal statically into dir, as make build
// does, for an agent initramfs (which has no C library).
func BuildMetal(dir string) (string, error) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out := filepath.Join(dir, "metal")
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "github.com/metal-dev/metal/cmd/metal")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("bootkit: build metal: %w\n%s", err, b)
	}
	return out, nil
}
