package images

import (
	"net/url"
	"strconv"
	"strings"

	"github.com/metal-dev/metal/images/source"
)

// Kind is the role of a file in an image.
type Kind string

const (
	KindKernel Kind = "kernel"
	KindInitrd Kind = "initrd"
	KindDisk   Kind = "disk"
	// KindFirmware is a firmware image a BMC fetches from metal.
	KindFirmware Kind = "firmware"
)

// File is one file of a site's image: what it is, where it comes from and
// the name it is served under.
type File struct {
	Image string
	Kind  Kind
	// Index is the initrd's position in the image's initrd list (0 for
	// kernels and disks).
	Index  int
	Source source.Spec
	// Name is the file's name under its image in the served tree (the
	// source's base name unless two files of the image share one).
	Name string
	// Format is the disk image's format as the site gives it (disks only):
	// its compression, or qcow2.
	Format string
	// Served is what the cache serves of the file, once a caller set it
	// from Cache.EnsureServed (an agent needs the served stream's checksum
	// and format, which for a qcow2 are not the site's).
	Served Served
}

// ServedPath is the URL path the HTTP boot server serves the file at once
// the cache holds it: /images/IMAGE/NAME.
func (f File) ServedPath() string {
	return "/images/" + url.PathEscape(f.Image) + "/" + url.PathEscape(f.Name)
}

// Catalog lists the files of a site's images.
type Catalog struct {
	Files []File
}

// Image is one of a site's images as the catalog needs it.
type Image struct {
	Name   string
	Kernel source.Spec
	Initrd []source.Spec
	Disk   source.Spec
	// Format is the disk's format as the site gives it: its compression,
	// or qcow2.
	Format string
	// Firmware is a firmware image, served as it is.
	Firmware source.Spec
}

// NewCatalog lists the kernels, initrds, disks and firmware of the
// images, in their order.
func NewCatalog(ims []Image) *Catalog {
	c := &Catalog{}
	for _, im := range ims {
		used := map[string]bool{}
		add := func(kind Kind, index int, src source.Spec, format string) {
			if src.URL == "" {
				return
			}
			name := source.BaseName(src.URL)
			if name == "" || used[name] {
				// Two files with one base name (a kernel and a disk both
				// called "image") stay apart by their role.
				name = string(kind)
				if kind == KindInitrd {
					name += strconv.Itoa(index)
				}
				if b := source.BaseName(src.URL); b != "" {
					name += "-" + b
				}
			}
			if format == FormatQcow2 {
				// Served as what the cache converts it to.
				name = strings.TrimSuffix(name, ".qcow2") + ".raw.zst"
			}
			used[name] = true
			c.Files = append(c.Files, File{Image: im.Name, Kind: kind, Index: index, Source: src, Name: name, Format: format})
		}
		add(KindKernel, 0, im.Kernel, "")
		for i, src := range im.Initrd {
			add(KindInitrd, i, src, "")
		}
		add(KindDisk, 0, im.Disk, im.Format)
		add(KindFirmware, 0, im.Firmware, "")
	}
	return c
}

// Lookup returns the image's file of that kind (and initrd index).
func (c *Catalog) Lookup(image string, kind Kind, index int) (File, bool) {
	for _, f := range c.Files {
		if f.Image == image && f.Kind == kind && f.Index == index {
			return f, true
		}
	}
	return File{}, false
}

// ByPath returns the file served at p (as File.ServedPath gives it).
func (c *Catalog) ByPath(p string) (File, bool) {
	rest, ok := strings.CutPrefix(p, "/images/")
	if !ok {
		return File{}, false
	}
	im, name, ok := strings.Cut(rest, "/")
	if !ok {
		return File{}, false
	}
	im, err1 := url.PathUnescape(im)
	name, err2 := url.PathUnescape(name)
	if err1 != nil || err2 != nil {
		return File{}, false
	}
	for _, f := range c.Files {
		if f.Image == im && f.Name == name {
			return f, true
		}
	}
	return File{}, false
}

// Image returns the files of one image.
func (c *Catalog) Image(name string) []File {
	var out []File
	for _, f := range c.Files {
		if f.Image == name {
			out = append(out, f)
		}
	}
	return out
}

// Matching returns the files whose checksum is one of the digests of im:
// the files an imported file serves.
func (c *Catalog) Matching(im Imported) []File {
	var out []File
	for _, f := range c.Files {
		if f.Source.Checksum == im.SHA256.String() || f.Source.Checksum == im.SHA512.String() {
			out = append(out, f)
		}
	}
	return out
}
