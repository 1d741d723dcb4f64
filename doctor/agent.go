package doctor

import (
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"

	"github.com/metal-dev/metal/images/initramfs"
	"github.com/metal-dev/metal/site"
)

// checkAgent checks what `metal serve` needs to build the install agent's
// initramfs, when the site needs the agent (it installs disk images or
// discovers unknown machines): a static metal binary to pack as /init, and
// a Debian kernel with its modules. An agent already built in the state
// directory is reused by serve, so then nothing else matters. Doctor
// builds and fetches nothing.
func checkAgent(s *site.Site, stateDir string) []Check {
	c := Check{Kind: KindAgent, Subject: "install agent"}
	if !needsAgent(s) {
		c.Status, c.Detail = Skip, "the site installs no disk image and discovers no machine"
		return []Check{c}
	}
	built := filepath.Join(stateDir, "files", "agent", "initrd.img")
	if _, err := os.Stat(built); err == nil {
		c.Status, c.Detail = OK, fmt.Sprintf("built: %s", built)
		return []Check{c}
	}
	exe, err := os.Executable()
	if err == nil {
		err = checkStatic(exe)
	}
	if err != nil {
		c.Status, c.Detail = Fail, fmt.Sprintf("this metal cannot be the agent: %v", err)
		c.Fix = "build metal with CGO_ENABLED=0 (make build does) and run that binary"
		return []Check{c}
	}
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	cached, _ := filepath.Glob(filepath.Join(initramfs.DefaultCacheDir, "*", "boot", "vmlinuz-*"))
	switch {
	case len(kernels) > 0:
		c.Status, c.Detail = OK, fmt.Sprintf("metal serve builds it from this binary and %s", kernels[len(kernels)-1])
	case len(cached) > 0:
		c.Status, c.Detail = OK, fmt.Sprintf("metal serve builds it from this binary and %s", cached[len(cached)-1])
	default:
		c.Status = Warn
		c.Detail = "no Debian kernel on this host: metal serve fetches " + initramfs.DefaultPackage + " with apt on its first start"
		c.Fix = "make sure apt can reach a Debian mirror, or install " + initramfs.DefaultPackage + " now"
	}
	return []Check{c}
}

// needsAgent is when serve builds the agent (daemon's rule).
func needsAgent(s *site.Site) bool {
	if s.Settings.UnknownMachines == "discover" {
		return true
	}
	for _, im := range s.Images {
		if im.Disk.URL != "" {
			return true
		}
	}
	return false
}

// checkStatic refuses an executable with an ELF interpreter: it could not
// start as /init of an initramfs.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s is not an ELF executable: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked", path)
		}
	}
	return nil
}
