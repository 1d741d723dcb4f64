// Package ipxe renders the per-machine iPXE scripts metal serves.
//
// Everything that reaches a script from machine data (names, URLs, kernel
// command lines) is treated as hostile. iPXE has no quoting: a script is
// split into lines at '\n' (a trailing '\\' joins the next line), a line
// into tokens at white space; a token "||", "&&" or ";" ends a command, a
// token starting with '#' starts a comment, and "${...}" anywhere in a token
// is expanded from settings. So each value is checked token by token, URLs
// are percent-encoded, and what cannot be made safe is refused: a script
// that does something other than what the intent says is never rendered.
package ipxe

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strings"

	"github.com/metal-dev/metal/pxe"
)

// ErrInvalid is returned, wrapped, when an intent cannot be rendered safely.
var ErrInvalid = errors.New("invalid boot intent")

// MaxCmdline bounds the kernel command line (x86 Linux takes 2048 bytes;
// the rest is headroom for other kernels).
const MaxCmdline = 4096

// Params is what a script needs beyond the intent.
type Params struct {
	// MAC of the machine, shown in the script's message.
	MAC net.HardwareAddr
	// Name of the machine, shown in the script's message (sanitised).
	Name string
	// BaseURL resolves kernel and initrd paths ("/images/..."). Nil leaves
	// them as paths, which iPXE resolves against the script's own URL: the
	// server the machine already reached.
	BaseURL *url.URL
}

// Render returns the iPXE script for a machine's boot intent.
//
//   - install, discover: fetch the kernel and initrds and boot them.
//   - local: boot from the first local disk.
//   - none: say so and return to the firmware.
func Render(in pxe.Intent, p Params) ([]byte, error) {
	var b strings.Builder
	b.WriteString("#!ipxe\n")
	who := label(p.Name, p.MAC)
	switch in.Action {
	case pxe.ActionInstall, pxe.ActionDiscover:
		if err := renderBoot(&b, in, p, who); err != nil {
			return nil, err
		}
	case pxe.ActionLocal:
		fmt.Fprintf(&b, "echo metal: %s boots from local disk\n", who)
		// UEFI: "exit" hands control back to the firmware's boot manager,
		// which moves on to the next boot option (the disk). BIOS: many
		// BIOSes do not try the next device after a PXE ROM returns, or try
		// the NIC again and loop, so boot the first disk through INT 13h
		// directly; --no-describe keeps it from being announced as a SAN
		// disk (iBFT) to the OS. If there is no disk, exit after all.
		b.WriteString("iseq ${platform} pcbios || exit\n")
		b.WriteString("sanboot --no-describe --drive 0x80 || exit\n")
	case pxe.ActionNone, "":
		fmt.Fprintf(&b, "echo metal: nothing to boot for %s\n", who)
		b.WriteString("exit\n")
	default:
		return nil, fmt.Errorf("%w: unknown action %q", ErrInvalid, sanitize(string(in.Action), 32))
	}
	return []byte(b.String()), nil
}

// Chain is the script for an iPXE that does not know which script is its
// own (an iPXE with a generic embedded script, or a DHCP answer that points
// every iPXE at one URL): it asks for the script of the NIC it booted from.
// netX is the interface iPXE opened last, which on a multi-NIC machine is
// the one that booted, where net0 might not be. The relative URL resolves
// against this script's URL, so the answer never depends on a Host header.
func Chain(scriptPath string) []byte {
	return []byte("#!ipxe\nchain " + strings.TrimSuffix(scriptPath, "/") + "/${netX/mac}\n")
}

func renderBoot(b *strings.Builder, in pxe.Intent, p Params, who string) error {
	if in.Kernel == "" {
		return fmt.Errorf("%w: %s without a kernel", ErrInvalid, in.Action)
	}
	kernel, err := scriptURL(in.Kernel, p.BaseURL)
	if err != nil {
		return fmt.Errorf("%w: kernel: %v", ErrInvalid, err)
	}
	type initrd struct{ name, url string }
	initrds := make([]initrd, 0, len(in.Initrd))
	seen := map[string]bool{}
	for i, raw := range in.Initrd {
		u, err := scriptURL(raw, p.BaseURL)
		if err != nil {
			return fmt.Errorf("%w: initrd %d: %v", ErrInvalid, i, err)
		}
		name := initrdName(u, i, seen)
		seen[name] = true
		initrds = append(initrds, initrd{name: name, url: u})
	}
	args, err := cmdline(in.Cmdline)
	if err != nil {
		return err
	}
	if in.AgentSecret != "" {
		if !isSecret(in.AgentSecret) {
			return fmt.Errorf("%w: agent secret: want 32-128 hex digits", ErrInvalid)
		}
		// Whatever the cmdline said about metal.token, the task's own
		// secret is the one the agent uses: the kernel hands the last
		// duplicate to the agent's parser, which keeps the last.
		args = append(args, "metal.token="+in.AgentSecret)
	}

	fmt.Fprintf(b, "echo metal: %s %s\n", who, in.Action)
	// UEFI: the kernel's EFI stub finds an initrd only when the command line
	// names it (initrd=<name>); BIOS ignores the argument. Naming each
	// initrd with --name makes one script boot both.
	b.WriteString("kernel ")
	b.WriteString(kernel)
	for _, r := range initrds {
		b.WriteString(" initrd=" + r.name)
	}
	for _, a := range args {
		b.WriteString(" " + a)
	}
	b.WriteString("\n")
	for _, r := range initrds {
		fmt.Fprintf(b, "initrd --name %s %s\n", r.name, r.url)
	}
	b.WriteString("boot\n")
	return nil
}

// cmdline splits a kernel command line into tokens that iPXE passes through
// unchanged. Any white space, newlines included, only separates arguments,
// as it does for the kernel, so a newline cannot start a new command.
func cmdline(s string) ([]string, error) {
	if len(s) > MaxCmdline {
		return nil, fmt.Errorf("%w: kernel command line is %d bytes, limit %d", ErrInvalid, len(s), MaxCmdline)
	}
	args := strings.FieldsFunc(s, isSpace)
	for _, a := range args {
		if err := checkToken(a); err != nil {
			return nil, fmt.Errorf("%w: kernel command line argument %q: %v", ErrInvalid, sanitize(a, 64), err)
		}
	}
	return args, nil
}

// isSecret accepts an agent secret as inventory.NewTaskSecret makes them.
func isSecret(s string) bool {
	if len(s) < 32 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// isSpace is C's isspace in iPXE: the bytes that separate tokens.
func isSpace(r rune) bool {
	switch r {
	case ' ', '\t', '\n', '\v', '\f', '\r':
		return true
	}
	return false
}

// checkToken accepts a token that iPXE reads as one literal argument.
func checkToken(t string) error {
	switch {
	case t == "":
		return errors.New("empty")
	case t == "||" || t == "&&" || t == ";":
		return errors.New("an iPXE command separator")
	case t[0] == '#':
		return errors.New("starts an iPXE comment")
	}
	for i := 0; i < len(t); i++ {
		switch c := t[i]; {
		case c <= ' ' || c >= 0x7f:
			return fmt.Errorf("byte %#02x is not printable ASCII", c)
		case c == '$':
			return errors.New(`"$" would start an iPXE setting expansion`)
		case c == '\\':
			return errors.New(`"\" would continue an iPXE line`)
		}
	}
	return nil
}

// scriptURL turns a kernel or initrd location into a token: an absolute
// http(s) URL, or a path on metal's server resolved against base.
func scriptURL(raw string, base *url.URL) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("bad URL: %w", err)
	}
	switch {
	case u.Scheme == "http" || u.Scheme == "https":
		if u.Host == "" {
			return "", errors.New("URL without a host")
		}
	case u.Scheme == "" && u.Host == "" && strings.HasPrefix(u.Path, "/"):
		if base != nil {
			u = base.ResolveReference(u)
		}
	default:
		return "", fmt.Errorf("want an http(s) URL or an absolute path, not %q", sanitize(raw, 64))
	}
	// A fragment never reaches the server; drop it rather than encode it.
	u.Fragment, u.RawFragment = "", ""
	s := escape(u.String())
	if err := checkToken(s); err != nil {
		return "", fmt.Errorf("URL %q: %v", sanitize(s, 64), err)
	}
	return s, nil
}

// escape percent-encodes what url.URL.String leaves raw but iPXE would read
// as syntax (white space, "$", "\"), and anything outside printable ASCII.
// iPXE decodes the escapes again before it sends the request.
func escape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`$\"'{}<>^|`+"`", c) >= 0 {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// initrdName names an initrd for "initrd --name" and the kernel's
// "initrd=": the URL's file name when it is plain, else initrd<i>.
func initrdName(u string, i int, seen map[string]bool) string {
	name := ""
	if pu, err := url.Parse(u); err == nil {
		name = path.Base(pu.Path)
	}
	ok := name != "" && len(name) <= 64 && !seen[name] && name[0] != '-' && name[0] != '.'
	for j := 0; ok && j < len(name); j++ {
		ok = isNameByte(name[j])
	}
	if !ok {
		name = fmt.Sprintf("initrd%d", i)
		for seen[name] {
			name += "_"
		}
	}
	return name
}

func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// sanitize makes machine data printable inside a script's echo line and in
// error messages: bytes outside [A-Za-z0-9._:-] become '_'.
func sanitize(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	b := []byte(s)
	for i, c := range b {
		if !isNameByte(c) && c != ':' {
			b[i] = '_'
		}
	}
	return string(b)
}

// label is how a script names its machine: "web-01 52:54:00:00:00:01".
func label(name string, mac net.HardwareAddr) string {
	parts := make([]string, 0, 2)
	if name != "" {
		parts = append(parts, sanitize(name, 64))
	}
	if len(mac) > 0 {
		parts = append(parts, mac.String())
	}
	if len(parts) == 0 {
		return "this machine"
	}
	return strings.Join(parts, " ")
}
