// Package netboot answers the netboot servers' questions (pxe.BootPolicy)
// from a loaded site: which machine a MAC is and what it boots. It stands in
// for the inventory store's boot intents until the converge engine writes
// them, behind the same interface.
package netboot

import (
	"context"
	"net"
	"net/url"
	"path"
	"strings"

	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/site"
)

// Options are the policy's settings beyond the site.
type Options struct {
	// Discover is what unknown machines boot when the site says
	// unknown_machines = "discover": the discovery agent's kernel and
	// initrd. Without a kernel, unknown machines get no boot file.
	Discover pxe.Intent
	// TokenKey signs per-machine script tokens; empty disables tokens.
	TokenKey []byte
	// ImagePath maps a local image file to the path the HTTP server serves
	// it under; remote (http, https) sources are passed to iPXE as they
	// are. Default: "/images/IMAGE/BASENAME".
	ImagePath func(image string, src site.Source) string
}

// Policy is a pxe.BootPolicy over a site.
type Policy struct {
	site  *site.Site
	opts  Options
	byMAC map[string]*site.Machine
}

// New indexes the site's machines by MAC.
func New(s *site.Site, opts Options) *Policy {
	if opts.ImagePath == nil {
		opts.ImagePath = DefaultImagePath
	}
	p := &Policy{site: s, opts: opts, byMAC: make(map[string]*site.Machine, len(s.Machines))}
	for _, m := range s.Machines {
		p.byMAC[m.MAC.String()] = m
	}
	return p
}

// DefaultImagePath is where the HTTP server serves a staged local file.
func DefaultImagePath(image string, src site.Source) string {
	return "/images/" + url.PathEscape(image) + "/" + url.PathEscape(path.Base(localPath(src.URL)))
}

// localPath strips file:// from a local source.
func localPath(u string) string { return strings.TrimPrefix(u, "file://") }

// Host implements pxe.BootPolicy.
func (p *Policy) Host(_ context.Context, mac net.HardwareAddr) (pxe.Host, error) {
	m, ok := p.byMAC[mac.String()]
	if !ok {
		return pxe.Host{}, pxe.ErrUnknownHost
	}
	h := pxe.Host{Name: m.Name, MAC: m.MAC, Hostname: m.Hostname, Network: m.Network}
	if m.IP.IsValid() {
		h.IP = net.IP(m.IP.AsSlice())
	}
	return h, nil
}

// Intent implements pxe.BootPolicy. A declared machine whose image has a
// kernel boots it; one whose image is only a disk boots from its local disk
// (writing disks is the install agent's job); a machine without an image,
// and any machine powered off in the site, does not netboot.
func (p *Policy) Intent(_ context.Context, mac net.HardwareAddr) (pxe.Intent, error) {
	m, ok := p.byMAC[mac.String()]
	if !ok {
		if p.site.Settings.UnknownMachines == "discover" && p.opts.Discover.Kernel != "" {
			in := p.opts.Discover
			in.Action = pxe.ActionDiscover
			return in, nil
		}
		return pxe.Intent{Action: pxe.ActionNone}, nil
	}
	in := pxe.Intent{Action: pxe.ActionNone, Token: p.Token(mac)}
	im := p.site.Image(m.Image)
	switch {
	case im == nil || m.Power == site.PowerOff:
	case im.Kernel.URL != "":
		in.Action = pxe.ActionInstall
		in.Kernel = p.sourceURL(im.Name, im.Kernel)
		for _, src := range im.Initrd {
			in.Initrd = append(in.Initrd, p.sourceURL(im.Name, src))
		}
		in.Cmdline = im.Cmdline
	default:
		in.Action = pxe.ActionLocal
	}
	return in, nil
}

func (p *Policy) sourceURL(image string, src site.Source) string {
	if strings.HasPrefix(src.URL, "http://") || strings.HasPrefix(src.URL, "https://") {
		return src.URL
	}
	return p.opts.ImagePath(image, src)
}

// Token is the machine's script token: an HMAC of its MAC, so it can be
// checked without being stored.
func (p *Policy) Token(mac net.HardwareAddr) string { return pxe.Token(p.opts.TokenKey, mac) }

// LocalSources lists the local files of the site's netboot images (kernels
// and initrds) that the HTTP server must serve, keyed by image.
func LocalSources(s *site.Site) map[string][]site.Source {
	out := map[string][]site.Source{}
	for _, im := range s.Images {
		for _, src := range append([]site.Source{im.Kernel}, im.Initrd...) {
			if src.URL != "" && !src.Remote() {
				out[im.Name] = append(out[im.Name], src)
			}
		}
	}
	return out
}

// ResolvePath turns a local source into a file path: file:// URLs as they
// are, other paths relative to the site file's directory.
func ResolvePath(siteDir string, src site.Source) string {
	p := localPath(src.URL)
	if strings.HasPrefix(p, "/") {
		return p
	}
	return path.Join(siteDir, p)
}

var _ pxe.BootPolicy = (*Policy)(nil)
