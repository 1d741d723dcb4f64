// Package bootfiles finds the files metal serves to netbooting machines: the
// iPXE binaries, found at run time (metal never ships a third-party binary),
// and directories of per-machine files, opened so that no request can reach
// outside them.
package bootfiles

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// Names of the iPXE binaries that DHCP hands out by client architecture.
const (
	// BIOS is chainloaded by a BIOS PXE ROM; it keeps using the ROM's UNDI
	// driver, so it works on any NIC.
	BIOS = "undionly.kpxe"
	// UEFI carries iPXE's own NIC drivers.
	UEFI = "ipxe.efi"
	// UEFISNP uses the firmware's network stack (SNP), the safer choice on
	// NICs iPXE has no driver for.
	UEFISNP = "snponly.efi"
)

// DefaultDir is where Debian's ipxe package puts the binaries.
const DefaultDir = "/usr/lib/ipxe"

// EnvDir names the environment variable that points metal at another
// directory of iPXE binaries (a custom build with an embedded script, say).
const EnvDir = "METAL_IPXE_DIR"

// ErrNotFound is returned, wrapped, when the iPXE binaries are missing.
var ErrNotFound = errors.New("ipxe binaries not found")

// IPXE is a located set of iPXE binaries. The paths are resolved once, at
// start-up, so a request can only ever name one of the known binaries.
type IPXE struct {
	dir   string
	paths map[string]string // name -> resolved path
}

// FindIPXE locates the iPXE binaries. dir is a setting from the site; when
// empty, $METAL_IPXE_DIR, then DefaultDir, is used. All of BIOS, UEFI and
// UEFISNP must be present: DHCP may hand out any of them, and a missing one
// would only show up as a machine that fails to boot.
func FindIPXE(dir string) (*IPXE, error) {
	source := "setting"
	if dir == "" {
		dir, source = os.Getenv(EnvDir), "$"+EnvDir
	}
	if dir == "" {
		dir, source = DefaultDir, "default"
	}
	x := &IPXE{dir: dir, paths: make(map[string]string, 3)}
	var missing []string
	for _, name := range []string{BIOS, UEFI, UEFISNP} {
		// Debian links ipxe.efi to /boot/ipxe.efi: follow links here, where
		// the directory is the operator's choice, not a client's.
		p, err := filepath.EvalSymlinks(filepath.Join(dir, name))
		if err != nil {
			missing = append(missing, name)
			continue
		}
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			missing = append(missing, name)
			continue
		}
		x.paths[name] = p
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w in %s (%s): missing %v; install the Debian package ipxe (apt-get install ipxe) or set %s to a directory holding %s, %s and %s",
			ErrNotFound, dir, source, missing, EnvDir, BIOS, UEFI, UEFISNP)
	}
	return x, nil
}

// Dir is the directory the binaries were found in.
func (x *IPXE) Dir() string { return x.dir }

// Names lists the binaries served, sorted.
func (x *IPXE) Names() []string {
	names := make([]string, 0, len(x.paths))
	for n := range x.paths {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Has reports whether name is one of the iPXE binaries.
func (x *IPXE) Has(name string) bool {
	_, ok := x.paths[name]
	return ok
}

// Open opens the binary called name. Names other than the known binaries
// give an error wrapping fs.ErrNotExist.
func (x *IPXE) Open(name string) (*os.File, fs.FileInfo, error) {
	p, ok := x.paths[name]
	if !ok {
		return nil, nil, fmt.Errorf("open ipxe binary %q: %w", name, fs.ErrNotExist)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, fmt.Errorf("open ipxe binary: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("stat ipxe binary: %w", err)
	}
	return f, fi, nil
}
