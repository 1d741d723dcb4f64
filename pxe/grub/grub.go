// Package grub renders the GRUB configs of the Secure Boot chain: the
// firmware loads Debian's signed shim, shim its signed network GRUB, and
// GRUB reads a config metal makes for the machine, then loads a signed
// kernel (which shim checks) and the initrds.
//
// Debian's signed GRUB cannot load modules with Secure Boot on and has no
// HTTP built in, so everything reaches it over TFTP from the server it came
// from: its config under its prefix (/grub), the first it finds of
// grub.cfg-01-<mac> (GRUB's own per-machine name) and grub.cfg, then the
// kernel and initrds by the same paths metal's HTTP server serves them
// under (/files/..., /images/...). Configs is the TFTP server's generator
// of those configs.
package grub

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"strings"

	"github.com/metal-dev/metal/pxe"
)

// ErrInvalid is returned, wrapped, when an intent cannot be rendered for
// GRUB safely.
var ErrInvalid = errors.New("invalid boot intent for GRUB")

// Prefix is the folder Debian's network GRUB reads its config from, on
// the TFTP server it was loaded from.
const Prefix = "grub"

// Render returns the GRUB config of a machine with this intent: its
// kernel and initrds by path from the TFTP server GRUB came from, or
// (local, none) back to the firmware, which tries its next boot option.
func Render(in pxe.Intent) ([]byte, error) {
	var b strings.Builder
	b.WriteString("set timeout=0\n")
	switch in.Action {
	case pxe.ActionInstall, pxe.ActionDiscover:
		kernel, err := path(in.Kernel)
		if err != nil {
			return nil, fmt.Errorf("%w: kernel: %v", ErrInvalid, err)
		}
		args := strings.Fields(in.Cmdline)
		if in.AgentSecret != "" {
			// The task's own secret wins over any in the cmdline: the
			// agent keeps the last.
			args = append(args, "metal.token="+in.AgentSecret)
		}
		for _, a := range args {
			if err := word(a); err != nil {
				return nil, fmt.Errorf("%w: kernel command line argument %q: %v", ErrInvalid, a, err)
			}
		}
		fmt.Fprintf(&b, "echo 'metal: %s'\n", in.Action)
		b.WriteString("linux " + kernel)
		for _, a := range args {
			b.WriteString(" " + a)
		}
		b.WriteString("\n")
		if len(in.Initrd) > 0 {
			b.WriteString("initrd")
			for i, r := range in.Initrd {
				p, err := path(r)
				if err != nil {
					return nil, fmt.Errorf("%w: initrd %d: %v", ErrInvalid, i, err)
				}
				b.WriteString(" " + p)
			}
			b.WriteString("\n")
		}
		b.WriteString("boot\n")
	case pxe.ActionLocal:
		// GRUB's exit returns success to the firmware, whose boot
		// manager then shows its menu rather than trying the next
		// option: chainload the disk's loader instead, as an installed
		// system's NVRAM entry would (the removable path, else Debian's
		// shim), under the same Secure Boot checks.
		b.WriteString("echo 'metal: local'\n")
		for _, loader := range localLoaders {
			fmt.Fprintf(&b, "if search --no-floppy --file --set=root %s; then\n  chainloader %s\n  boot\nfi\n", loader, loader)
		}
		b.WriteString("exit\n")
	case pxe.ActionNone, "":
		b.WriteString("exit\n")
	default:
		return nil, fmt.Errorf("%w: unknown action %q", ErrInvalid, in.Action)
	}
	return []byte(b.String()), nil
}

// localLoaders are the boot loaders a local boot looks for on the disks,
// in order: the removable-media path, then where Debian installs shim.
var localLoaders = []string{"/EFI/BOOT/BOOTX64.EFI", "/EFI/debian/shimx64.efi"}

// path accepts a path on metal's own servers ("/images/x/linux"): GRUB
// has no HTTP here, so a URL elsewhere cannot be fetched.
func path(p string) (string, error) {
	if p == "" {
		return "", errors.New("none given")
	}
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("%q: want a path on metal's servers (GRUB fetches over TFTP, not from URLs)", p)
	}
	return p, word(p)
}

// word accepts what GRUB's parser reads as one literal word: no quoting,
// escapes, variables, separators or comments. Anything else is refused
// rather than quoted, as an intent comes from machine data.
func word(w string) error {
	for i := 0; i < len(w); i++ {
		c := w[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-_.,:=/+@%", c) >= 0:
		default:
			return fmt.Errorf("byte %q is not read literally by GRUB", c)
		}
	}
	if w == "" {
		return errors.New("empty")
	}
	return nil
}

// Configs makes the GRUB config a machine asks for over TFTP, only for
// the address leased to its MAC.
type Configs struct {
	Policy pxe.BootPolicy
	Leases pxe.Leases
}

// Generate serves grub/grub.cfg and grub/grub.cfg-01-<mac> (that of the
// client's own MAC) to a machine on the Secure Boot chain; every other
// name is not this generator's (fs.ErrNotExist).
func (c Configs) Generate(ctx context.Context, client netip.Addr, name string) ([]byte, error) {
	file, ok := strings.CutPrefix(name, Prefix+"/")
	if !ok || !strings.HasPrefix(file, "grub.cfg") {
		return nil, fs.ErrNotExist
	}
	if c.Leases == nil || !client.IsValid() {
		return nil, fmt.Errorf("no lease to tell a machine by: %w", fs.ErrPermission)
	}
	mac, ok := c.Leases.MACOf(net.IP(client.AsSlice()))
	if !ok {
		return nil, fmt.Errorf("%s holds no lease: %w", client, fs.ErrPermission)
	}
	if file != "grub.cfg" && file != "grub.cfg-01-"+strings.ReplaceAll(mac.String(), ":", "-") {
		// Another MAC's name, or GRUB's names by IP: not found, so GRUB
		// goes on to the next it tries.
		return nil, fs.ErrNotExist
	}
	host, err := c.Policy.Host(ctx, mac)
	if errors.Is(err, pxe.ErrUnknownHost) {
		return nil, fs.ErrNotExist
	}
	if err != nil {
		return nil, fmt.Errorf("boot policy: %w", err)
	}
	if host.Boot != pxe.BootSecure {
		return nil, fmt.Errorf("%s boots by %q, not through GRUB: %w", mac, host.Boot, fs.ErrPermission)
	}
	intent, err := c.Policy.Intent(ctx, mac)
	if err != nil {
		return nil, fmt.Errorf("boot policy: %w", err)
	}
	if intent.Spent {
		// As pxe/http refuses a spent script: it carries the task's
		// one-time agent secret, which the agent already used.
		return nil, fmt.Errorf("the GRUB config of %s carries a one-time agent credential already used: %w", mac, fs.ErrPermission)
	}
	return Render(intent)
}
