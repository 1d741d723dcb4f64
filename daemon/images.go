package daemon

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"

	"github.com/metal-dev/metal/images"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/site"
	"github.com/metal-dev/metal/site/apply"
	"github.com/metal-dev/metal/site/netboot"
)

// SyncSite records the site's machines in the store (see apply.Sync).
func SyncSite(ctx context.Context, store inventory.Store, s *site.Site) error {
	return apply.Sync(ctx, store, s)
}

// stageImages copies the site's local kernels, initrds and disk images,
// checksum-verified, into the directory the HTTP server serves at /images/,
// and notes where each image's disk is served.
func (d *Daemon) stageImages(siteDir string) (*bootfiles.Root, error) {
	dir := images.Dir{Path: filepath.Join(d.StateDir, "images")}
	for image, srcs := range netboot.LocalSources(d.site) {
		for _, src := range srcs {
			p := netboot.ResolvePath(siteDir, src)
			if _, err := dir.StageLocal(image, filepath.Base(p), p, src.Checksum); err != nil {
				return nil, fmt.Errorf("image %q: %w", image, err)
			}
		}
	}
	for _, im := range d.site.Images {
		switch {
		case im.Disk.URL == "":
		case im.Disk.Remote():
			// Until the image cache serves remote disks, the agent
			// fetches them from where the site says.
			d.imagePath[im.Name] = im.Disk.URL
		default:
			p := netboot.ResolvePath(siteDir, im.Disk)
			if _, err := dir.StageLocal(im.Name, filepath.Base(p), p, im.Disk.Checksum); err != nil {
				return nil, fmt.Errorf("image %q disk: %w", im.Name, err)
			}
			d.imagePath[im.Name] = netboot.DefaultImagePath(im.Name, site.Source{URL: path.Base(p)})
		}
	}
	if err := os.MkdirAll(dir.Path, 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	return bootfiles.OpenRoot(dir.Path)
}
