package doctor

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync"

	"github.com/metal-dev/metal/pxe/bootfiles"
	"github.com/metal-dev/metal/site"
	"github.com/metal-dev/metal/site/netboot"
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
	return []Check{c}
}

// imageFile is one file of an image: a kernel, an initrd or its disk.
type imageFile struct {
	image, role string
	src         site.Source
}

// checkImages checks that each image's local files exist and match their
// checksums, hashing them concurrently (disk images can be large). Remote
// files are fetched and verified when used; doctor does not download them.
func checkImages(ctx context.Context, s *site.Site, siteDir string) []Check {
	var files []imageFile
	for _, im := range s.Images {
		if im.Kernel.URL != "" {
			files = append(files, imageFile{im.Name, "kernel", im.Kernel})
		}
		for _, src := range im.Initrd {
			files = append(files, imageFile{im.Name, "initrd", src})
		}
		if im.Disk.URL != "" {
			files = append(files, imageFile{im.Name, "disk", im.Disk})
		}
	}
	out := make([]Check, len(files))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2) // hashing is CPU and disk bound
	for i, f := range files {
		out[i] = Check{Kind: KindImage, Subject: fmt.Sprintf("image %s %s", f.image, f.role)}
		if f.src.Remote() {
			out[i].Status = Skip
			out[i].Detail = fmt.Sprintf("%s is remote: fetched and checked against its checksum when used", f.src.URL)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i].Status, out[i].Detail, out[i].Fix = verifyFile(ctx, netboot.ResolvePath(siteDir, f.src), f.src.Checksum)
		}()
	}
	wg.Wait()
	return out
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
	alg, want, _ := strings.Cut(checksum, ":")
	var h hash.Hash
	switch alg {
	case "sha256":
		h = sha256.New()
	case "sha512":
		h = sha512.New()
	default:
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
