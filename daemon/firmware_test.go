package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/metal-dev/metal/images"
	"github.com/metal-dev/metal/site"
)

// TestFirmwareServed: a machine's firmware image (a local file) goes into
// the image cache, verified, once however many machines install it, and
// FirmwareURL is where metal's HTTP server serves it to BMCs.
func TestFirmwareServed(t *testing.T) {
	dir := t.TempDir()
	img := []byte("a firmware image")
	if err := os.WriteFile(filepath.Join(dir, "bios.bin"), img, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(img)
	checksum := "sha256:" + hex.EncodeToString(sum[:])
	src := fmt.Sprintf(`site "t" {}
network "lan" {
  subnet = "192.0.2.0/24"
  mode   = "off"
}
machine "m" {
  count = 2
  mac   = format("52:54:00:00:00:%%02x", count.index + 1)
  firmware "BIOS" {
    version  = "1.17.0"
    image    = "bios.bin"
    checksum = %q
  }
  bmc {
    address  = "http://192.0.2.100"
    username = "admin"
    password = "x"
  }
}
`, checksum)
	res, diags := site.Load(filepath.Join(dir, "site.hcl"), []byte(src), site.Options{})
	if diags.HasErrors() {
		t.Fatal(hcl.Diagnostics(diags).Error())
	}
	cache, err := images.Open(t.TempDir(), images.Options{SiteDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	catalog, err := ensureImages(ctx, cache, res.Site)
	if err != nil {
		t.Fatal(err)
	}
	var fw []images.File
	for _, f := range catalog.Files {
		if f.Kind == images.KindFirmware {
			fw = append(fw, f)
		}
	}
	if len(fw) != 1 {
		t.Fatalf("firmware files in the catalog: %+v, want one for both machines", fw)
	}
	served, err := os.ReadFile(filepath.Join(cache.ServeDir(), fw[0].Image, fw[0].Name))
	if err != nil || !bytes.Equal(served, img) {
		t.Fatalf("served firmware: %q, %v", served, err)
	}
	d := &Daemon{BaseURL: "http://192.0.2.1:8080", catalog: catalog}
	want := "http://192.0.2.1:8080/images/firmware-" + hex.EncodeToString(sum[:8]) + "/bios.bin"
	if got := d.FirmwareURL(res.Site.Machines[0].Firmware[0].Image); got != want {
		t.Errorf("FirmwareURL %q, want %q", got, want)
	}
}
