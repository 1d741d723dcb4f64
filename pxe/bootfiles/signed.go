package bootfiles

import (
	"fmt"
	"os"
	"path/filepath"
)

// Names the Secure Boot chain is served under. Shim fetches GRUB by this
// name from beside itself (the TFTP directory or the URL it came from).
const (
	Shim = "shimx64.efi"
	GRUB = "grubx64.efi"
)

// EnvSecureBootDir names the environment variable that points metal at a
// directory holding Shim and GRUB (files of those names), signed by a key
// the machines' firmware trusts.
const EnvSecureBootDir = "METAL_SECUREBOOT_DIR"

// DebianSigned is where Debian's shim-signed and grub-efi-amd64-signed
// install the signed binaries (the network build of GRUB, whose prefix is
// /grub on the server it was loaded from).
var DebianSigned = map[string]string{
	Shim: "/usr/lib/shim/shimx64.efi.signed",
	GRUB: "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
}

// FindSecureBoot locates the signed boot chain: in dir (a setting) when
// set, else in $METAL_SECUREBOOT_DIR, else where Debian's packages put it.
// The result serves like the iPXE binaries (Has, Open) and can be joined
// to them with Join.
func FindSecureBoot(dir string) (*IPXE, error) {
	source := "setting"
	if dir == "" {
		dir, source = os.Getenv(EnvSecureBootDir), "$"+EnvSecureBootDir
	}
	paths := map[string]string{Shim: filepath.Join(dir, Shim), GRUB: filepath.Join(dir, GRUB)}
	if dir == "" {
		dir, source, paths = "Debian's paths", "default", DebianSigned
	}
	x := &IPXE{dir: dir, paths: make(map[string]string, len(paths))}
	var missing []string
	for name, p := range paths {
		p, err := filepath.EvalSymlinks(p)
		if fi, serr := os.Stat(p); err != nil || serr != nil || !fi.Mode().IsRegular() {
			missing = append(missing, name)
			continue
		}
		x.paths[name] = p
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: signed boot chain in %s (%s): missing %v; install the Debian packages shim-signed and grub-efi-amd64-signed, or set %s to a directory holding %s and %s",
			ErrNotFound, dir, source, missing, EnvSecureBootDir, Shim, GRUB)
	}
	return x, nil
}

// Join returns the files of x and of more, as one set; a name in both is
// served from more. Nil sets are skipped.
func Join(x *IPXE, more ...*IPXE) *IPXE {
	j := &IPXE{paths: map[string]string{}}
	for _, s := range append([]*IPXE{x}, more...) {
		if s == nil {
			continue
		}
		if j.dir == "" {
			j.dir = s.dir
		}
		for n, p := range s.paths {
			j.paths[n] = p
		}
	}
	return j
}
