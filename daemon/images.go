package daemon

import (
	"context"
	"fmt"
	"strings"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/images"
	"github.com/metal-dev/metal/images/source"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe/agentapi"
	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/site"
)

// SyncSite records the site's machines in the store (see apply.Sync).
func SyncSite(ctx context.Context, store inventory.Store, s *site.Site) error {
	return apply.Sync(ctx, store, s)
}

// prepareImages brings every file of the site's images (kernels, initrds,
// disks; local or remote) into the content-addressed cache, verified, and
// returns the tree the HTTP server serves at /images/. After this, booting
// and installing need nothing outside this machine; a file that fails its
// checksum is never served, and the daemon refuses to start with it.
func (d *Daemon) prepareImages(ctx context.Context, siteDir string) (*bootfiles.Root, error) {
	cache, err := images.Open(d.StateDir, images.Options{SiteDir: siteDir, Logger: d.log,
		Progress: func(f images.File, done, total int64) {
			if done == total {
				d.log.Info("image file cached", "image", f.Image, "file", f.Name, "bytes", done)
			}
		}})
	if err != nil {
		return nil, err
	}
	// Kept: a reload of the site brings its new images into the same
	// cache, under the same per-file locks.
	d.cache = cache
	if d.catalog, err = ensureImages(ctx, cache, d.site); err != nil {
		return nil, err
	}
	return bootfiles.OpenRoot(cache.ServeDir())
}

// Catalog lists the files of the site's images (images.NewCatalog): the
// site's image blocks translated into what the image cache knows, and
// the machines' firmware images, each as an image of its own named by
// its checksum (firmwareImage), so BMCs fetch them from metal's HTTP
// server, verified, as machines fetch their boot files.
func Catalog(s *site.Site) *images.Catalog {
	ims := make([]images.Image, len(s.Images))
	for i, im := range s.Images {
		ims[i] = images.Image{Name: im.Name, Kernel: source.Spec(im.Kernel), Disk: source.Spec(im.Disk), Format: im.Format}
		for _, src := range im.Initrd {
			ims[i].Initrd = append(ims[i].Initrd, source.Spec(src))
		}
	}
	seen := map[string]bool{}
	for _, m := range s.Machines {
		for _, f := range m.Firmware {
			name := firmwareImage(f.Image)
			if !seen[name] {
				seen[name] = true
				ims = append(ims, images.Image{Name: name, Firmware: source.Spec(f.Image)})
			}
		}
	}
	return images.NewCatalog(ims)
}

// firmwareImage names the catalog image of a firmware file: one per
// content, however many machines install it.
func firmwareImage(src site.Source) string {
	_, hex, _ := strings.Cut(src.Checksum, ":")
	return "firmware-" + hex[:min(len(hex), 16)]
}

// FirmwareURL is the URL of metal's HTTP server a BMC fetches a firmware
// image from ("" when the cache does not hold it).
func (d *Daemon) FirmwareURL(src site.Source) string {
	d.siteMu.RLock()
	defer d.siteMu.RUnlock()
	if f, ok := d.catalog.Lookup(firmwareImage(src), images.KindFirmware, 0); ok {
		return d.BaseURL + f.ServedPath()
	}
	return ""
}

// ensureImages brings every file of s's images into the cache and returns
// their catalog.
func ensureImages(ctx context.Context, cache *images.Cache, s *site.Site) (*images.Catalog, error) {
	catalog := Catalog(s)
	for i, f := range catalog.Files {
		served, err := cache.EnsureServed(ctx, f)
		if err != nil {
			return nil, fmt.Errorf("image %q %s %s: %w (`metal images fetch` or `metal images import` put it in the cache)",
				f.Image, f.Kind, f.Source.Display(), err)
		}
		catalog.Files[i].Served = served
	}
	return catalog, nil
}

// ImagePath is where the HTTP server serves a file of a site image: every
// file, local or remote, is served from the cache.
func (d *Daemon) ImagePath(image string, src site.Source) string {
	d.siteMu.RLock()
	defer d.siteMu.RUnlock()
	for _, f := range d.catalog.Files {
		if f.Image == image && f.Source.URL == src.URL {
			return f.ServedPath()
		}
	}
	return ""
}

// ReadyURL is the URL the installed OS of the machine with mac phones
// home to, with its install's secret.
func (d *Daemon) ReadyURL(mac, secret string) string {
	return d.BaseURL + agentapi.ReadyPath(mac, secret)
}

// ImageStream is the checksum and format of what the agent streams of a
// site image's disk: the site's, or for a qcow2 those of the zstd stream
// the cache converted it to. ok is false when the image has no disk.
func (d *Daemon) ImageStream(image string) (checksum, format string, ok bool) {
	d.siteMu.RLock()
	defer d.siteMu.RUnlock()
	if f, ok := d.catalog.Lookup(image, images.KindDisk, 0); ok && f.Served.Checksum != "" {
		return f.Served.Checksum, f.Served.Format, true
	}
	return "", "", false
}

// ImageURL is the URL the agent streams the disk image of a site image
// from; empty when the image has no disk.
func (d *Daemon) ImageURL(image string) string {
	d.siteMu.RLock()
	defer d.siteMu.RUnlock()
	if f, ok := d.catalog.Lookup(image, images.KindDisk, 0); ok {
		return d.BaseURL + f.ServedPath()
	}
	return ""
}
