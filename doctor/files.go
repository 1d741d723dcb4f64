package doctor

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/metal-dev/metal/images"
	"github.com/metal-dev/metal/images/source"
	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/site"
)

// checkIPXE finds the iPXE binaries TFTP and HTTP serve.
func checkIPXE(s *site.Site) []Check {
	c := Check{Kind: KindIPXE, Subject: "iPXE binaries"}
	x, err := bootfiles.FindIPXE(s.Settings.IPXEDir)
	if err != nil {
		c.Status, c.Detail = Fail, err.Error()
		c.Fix = "install Debian's ipxe package (apt-get install ipxe), or set the site's ipxe_dir (or " + bootfiles.EnvDir + ") to a directory holding them"
		return []Check{c}
	}
	c.Status, c.Detail = OK, fmt.Sprintf("%s in %s", strings.Join(x.Names(), ", "), x.Dir())
	if !s.NeedsSecureBoot() {
		return []Check{c}
	}
	sc := Check{Kind: KindIPXE, Subject: "signed boot chain (secureboot machines)"}
	if signed, err := bootfiles.FindSecureBoot(s.Settings.SecureBootDir); err != nil {
		sc.Status, sc.Detail = Fail, err.Error()
		sc.Fix = "install Debian's shim-signed and grub-efi-amd64-signed, or set the site's secureboot_dir (or " + bootfiles.EnvSecureBootDir + ") to a directory holding " + bootfiles.Shim + " and " + bootfiles.GRUB
	} else {
		sc.Status, sc.Detail = OK, fmt.Sprintf("%s in %s", strings.Join(signed.Names(), ", "), signed.Dir())
	}
	return []Check{c, sc}
}

// imageFile is one file of an image: a kernel, an initrd or its disk.
type imageFile struct {
	image string
	role  images.Kind
	src   site.Source
}

// checkImages checks that each image's local files exist and match their
// checksums, hashing them concurrently (disk images can be large), and
// whether each remote file is already in the image cache of stateDir.
// Doctor downloads nothing: `metal images fetch` does.
func checkImages(ctx context.Context, s *site.Site, siteDir, stateDir string) []Check {
	var files []imageFile
	for _, im := range s.Images {
		if im.Kernel.URL != "" {
			files = append(files, imageFile{im.Name, images.KindKernel, im.Kernel})
		}
		for _, src := range im.Initrd {
			files = append(files, imageFile{im.Name, images.KindInitrd, src})
		}
		if im.Disk.URL != "" {
			files = append(files, imageFile{im.Name, images.KindDisk, im.Disk})
		}
	}
	out := make([]Check, len(files))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2) // hashing is CPU and disk bound
	for i, f := range files {
		out[i] = Check{Kind: KindImage, Subject: fmt.Sprintf("image %s %s", f.image, f.role)}
		if f.src.Remote() {
			out[i].Status, out[i].Detail, out[i].Fix = cachedStatus(stateDir, siteDir, f)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i].Status, out[i].Detail, out[i].Fix = verifyFile(ctx, source.LocalPath(siteDir, f.src.URL), f.src.Checksum)
		}()
	}
	wg.Wait()
	return out
}

// cachedStatus says whether a remote file is in the image cache. A cache
// that does not exist yet is not created.
func cachedStatus(stateDir, siteDir string, f imageFile) (Status, string, string) {
	fetch := fmt.Sprintf("fetch it ahead of the rollout: metal images fetch --site SITE %s (or let serve fetch it when first needed)", f.image)
	if _, err := os.Stat(filepath.Join(stateDir, "images")); err != nil {
		return Warn, fmt.Sprintf("%s is not cached yet (no image cache in %s)", source.Spec(f.src).Display(), stateDir), fetch
	}
	cache, err := images.Open(stateDir, images.Options{SiteDir: siteDir})
	if err != nil {
		return Fail, err.Error(), "check the state directory"
	}
	st := cache.Status(images.SourceFile(f.image, f.role, source.Spec(f.src)))
	switch st.State {
	case images.StateCached, images.StateVerified:
		return OK, fmt.Sprintf("%s is cached (%s, %d bytes)", source.Spec(f.src).Display(), st.Digest, st.Size), ""
	case images.StatePartial:
		return Warn, fmt.Sprintf("%s is partly downloaded (%d bytes)", source.Spec(f.src).Display(), st.Size), "finish it: " + fetch
	}
	return Warn, fmt.Sprintf("%s is not cached yet", source.Spec(f.src).Display()), fetch
}

// verifyFile checks that path is a readable regular file matching checksum
// ("sha256:<hex>", "sha512:<hex>" or "").
func verifyFile(ctx context.Context, path, checksum string) (Status, string, string) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Fail, fmt.Sprintf("%s does not exist", path), "put the file there, or fix its path in the image block (relative paths are from the site file's directory)"
	}
	if err != nil {
		return Fail, fmt.Sprintf("%s: %v", path, err), "make the file readable by the user metal runs as"
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return Fail, fmt.Sprintf("%s is not a regular file", path), "point the image block at a file"
	}
	if checksum == "" {
		return Warn, fmt.Sprintf("%s exists (%d bytes) but the site gives no checksum", path, fi.Size()),
			fmt.Sprintf("add checksum = \"sha256:...\" (sha256sum %s) so a changed file is never served", path)
	}
	alg, _, _ := strings.Cut(checksum, ":")
	h, want, err := images.Hasher(checksum)
	if err != nil {
		return Fail, fmt.Sprintf("unsupported checksum %q", checksum), "use sha256:<hex> or sha512:<hex>"
	}
	if _, err := io.Copy(h, readerCtx{ctx, f}); err != nil {
		return Fail, fmt.Sprintf("reading %s: %v", path, err), "check the file and the disk it is on"
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, want) {
		return Fail, fmt.Sprintf("%s does not match its checksum: the site says %s, the file has %s:%s", path, checksum, alg, got),
			"the file is damaged or not the one the site means: fetch it again, or update the checksum if the new file is right"
	}
	return OK, fmt.Sprintf("%s (%d bytes) matches %s", path, fi.Size(), alg), ""
}

// readerCtx stops a long read when ctx ends.
type readerCtx struct {
	ctx context.Context
	r   io.Reader
}

func (r readerCtx) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
