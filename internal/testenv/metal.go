package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// BuildMetal builds this tree's metal into dir, static as make build makes
// it (the install agent runs it as /init, with no C library). Every test
// that runs metal as a process builds it with these same flags, so the Go
// build cache serves all but the first.
func BuildMetal(dir string) (string, error) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out := filepath.Join(dir, "metal")
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "github.com/metal-dev/metal/cmd/metal")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build metal: %w\n%s", err, b)
	}
	return out, nil
}
