package bootkit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"
	"github.com/google/go-cmp/cmp"

	"github.com/metal-dev/metal/internal/qemu/qemutest"
	"github.com/metal-dev/metal/internal/testenv"
)

func TestKernel(t *testing.T) {
	testenv.Integration(t, "a Debian kernel package (apt-get download)")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p, err := Kernel(ctx, CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdr := make([]byte, 0x206)
	if _, err := io.ReadFull(f, hdr); err != nil {
		t.Fatal(err)
	}
	// The x86 boot protocol's header magic: this is a bzImage.
	if string(hdr[0x202:0x206]) != "HdrS" {
		t.Fatalf("%s is not a bzImage", p)
	}
	// Cached: a second call fetches nothing; the file is the same one,
	// not written again. (Asserted on the file, not on a time limit, which
	// a loaded host misses.)
	before, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if p2, err := Kernel(ctx, CacheDir()); err != nil || p2 != p {
		t.Fatalf("second Kernel = %q, %v; want %q", p2, err, p)
	}
	after, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("the second Kernel wrote %s again: cached, it should fetch nothing", p)
	}
}

func TestInitramfs(t *testing.T) {
	img, err := Initramfs("bootkit-test-marker")
	if err != nil {
		t.Fatal(err)
	}
	r := cpio.NewReader(bytes.NewReader(img))
	got := map[string]string{}
	var init []byte
	for {
		h, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h.Mode.String()
		if h.Name == "init" {
			init, _ = io.ReadAll(r)
		}
	}
	want := map[string]string{
		"bin": "040755", "dev": "040755", "proc": "040755", "sys": "040755",
		"bin/busybox": "0100755", "bin/sh": "0120777", "init": "0100755",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	if !bytes.Contains(init, []byte("echo bootkit-test-marker\n")) || !bytes.Contains(init, []byte("poweroff -f")) {
		t.Errorf("init:\n%s", init)
	}
	for _, bad := range []string{"short", "has space in it", "$(reboot)-xxxxxxx", "a\nb-cccccccc"} {
		if _, err := Initramfs(bad); err == nil {
			t.Errorf("Initramfs(%q) accepted", bad)
		}
	}
}

// TestDirectBoot boots the kit without a network (QEMU -kernel/-initrd),
// so a netboot test failing later is not the kit's fault.
func TestDirectBoot(t *testing.T) {
	testenv.Integration(t, "QEMU")
	if err := CheckQEMU(BIOS); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kernel, err := Kernel(ctx, CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const marker = "bootkit-direct-boot-ok"
	img, err := Initramfs(marker)
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initrd")
	if err := os.WriteFile(initrd, img, 0o644); err != nil {
		t.Fatal(err)
	}
	serial := filepath.Join(dir, "serial.log")
	argv := DirectBoot(qemutest.Accel(t), 512, kernel, initrd, "file,id=ser0,path="+serial)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	// Pdeathsig: no QEMU outlives a test binary killed at its timeout.
	child, err := testenv.StartChild(cmd)
	if err == nil {
		err = child.Wait()
	}
	if err != nil {
		t.Fatalf("qemu: %v: %s", err, stderr.Bytes())
	}
	if err := WaitForMarker(ctx, serial, marker, closed()); err != nil {
		log, _ := os.ReadFile(serial)
		t.Fatalf("%v; serial:\n%s", err, log)
	}
	t.Logf("direct boot to marker and poweroff: %v", time.Since(start))
}

func closed() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
