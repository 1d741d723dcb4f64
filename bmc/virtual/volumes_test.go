package virtual_test

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metal-dev/metal/bmc/internal/testpeer"
	"github.com/metal-dev/metal/bmc/virtual"
	"github.com/metal-dev/metal/internal/syncbuf"
)

// TestVolumesAreQEMUDisks: a RAID volume created through Redfish is a disk
// of the QEMU machine. Created while the machine runs, it is hot-plugged;
// after a reset the guest's firmware (SeaBIOS, its log on QEMU's debug
// port) finds it on the SCSI controller, as a RAID controller's logical
// drive, with the volume's capacity. It keeps its data across a power
// cycle and a restart of the BMC; deleted, it leaves the machine and its
// file goes.
func TestVolumesAreQEMUDisks(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "vbmc") // short: QMP's socket path
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	stateDir := filepath.Join(dir, "state")
	seabios := filepath.Join(dir, "seabios.log")
	cmd := append(testpeer.QEMUCommand(t), "-chardev", "file,id=dbg,path="+seabios, "-device", "isa-debugcon,iobase=0x402,chardev=dbg")
	out := &syncbuf.Buffer{}
	newQEMU := func() *virtual.QEMU {
		m, err := virtual.NewQEMU(virtual.QEMUConfig{Name: "vm-r", QMPSocket: filepath.Join(dir, "qmp.sock"),
			Command: cmd, VolumeDir: stateDir, Output: out})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	// Two 1 GiB drives, mirrored.
	hw := virtual.DefaultHardware(virtual.MachineSpec{Name: "vm-r"})
	hw.Drives = []virtual.Drive{
		{Model: "QEMU HARDDISK", Serial: "d0", Bytes: 1 << 30, Media: "SSD", Protocol: "SATA", Health: "OK"},
		{Model: "QEMU HARDDISK", Serial: "d1", Bytes: 1 << 30, Media: "SSD", Protocol: "SATA", Health: "OK"},
	}
	serve := func(m *virtual.QEMU) *rf {
		srv, err := virtual.NewServer(virtual.Options{Auth: virtual.AuthNone, StateDir: stateDir},
			virtual.MachineSpec{Name: "vm-r", Machine: m, Hardware: &hw})
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewServer(srv)
		t.Cleanup(ts.Close)
		return &rf{t: t, base: ts.URL}
	}
	m := newQEMU()
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("qemu output:\n%s", out)
		}
	})
	c := serve(m)
	const sys = "/redfish/v1/Systems/vm-r"
	reset := func(typ string) {
		t.Helper()
		if code, body, _ := c.do("POST", sys+"/Actions/ComputerSystem.Reset", map[string]string{"ResetType": typ}); code/100 != 2 {
			t.Fatalf("reset %s: %d %v", typ, code, body)
		}
	}
	// seabiosSees waits for SeaBIOS, started anew, to have scanned its
	// drives, and reports whether it found the volume's disk. Only what
	// the last SeaBIOS to start wrote counts: the boot before a reset
	// goes on writing (its CD-ROM retries, "No bootable device") until
	// the reset takes, after the log was emptied.
	seabiosSees := func() bool {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
			b := lastBoot(seabios)
			if strings.Contains(b, "No bootable device") || strings.Contains(b, "Booting from") {
				return strings.Contains(b, "metal-volume-") || strings.Contains(b, "virtio-scsi vendor=")
			}
			if time.Now().After(deadline) {
				all, _ := os.ReadFile(seabios)
				t.Fatalf("SeaBIOS never got through its drives; its log:\n%s", all)
			}
		}
	}
	restart := func(typ string) bool {
		t.Helper()
		if err := os.WriteFile(seabios, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		reset(typ)
		return seabiosSees()
	}

	reset("On")
	if seabiosSees() {
		t.Fatal("SeaBIOS found a volume before one was created")
	}
	code, body, hdr := c.do("POST", sys+"/Storage/1/Volumes", map[string]any{
		"Name": "os", "RAIDType": "RAID1",
		"Links": map[string]any{"Drives": []map[string]string{
			{"@odata.id": sys + "/Storage/1/Drives/0"}, {"@odata.id": sys + "/Storage/1/Drives/1"},
		}},
	})
	if code != 201 {
		t.Fatalf("create volume: %d %v", code, body)
	}
	loc := hdr.Get("Location")
	v := virtual.Volume{ID: loc[strings.LastIndex(loc, "/")+1:], Name: "os"}
	disk := m.VolumePath(v)
	if fi, err := os.Stat(disk); err != nil || fi.Size() != 1<<30 {
		t.Fatalf("the volume's disk %s: %v, %v; want 1 GiB", disk, fi, err)
	}
	// Hot-plugged into the running machine: its firmware finds it at the
	// next reset (SeaBIOS scans once, at its start).
	if !restart("ForceRestart") {
		t.Fatalf("SeaBIOS did not find the volume after a reset; its log:\n%s", lastBoot(seabios))
	}
	b := lastBoot(seabios)
	t.Logf("SeaBIOS's drives:\n%s", grepLines(b, "scsi", "drive", "sectors"))
	// A mirror of two 1 GiB drives holds 1 GiB: 2,097,152 sectors.
	if !strings.Contains(b, "virtio-scsi blksize=512 sectors=2097152") {
		t.Errorf("SeaBIOS does not see a disk of the volume's 1 GiB")
	}

	// Data written to the volume stays across a power cycle and a new
	// BMC with the same state.
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("metal volume data"), 1<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	reset("ForceOff")
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m = newQEMU()
	c = serve(m)
	if !restart("On") {
		t.Fatal("after a restart of the BMC, the machine lost the volume's disk")
	}
	got := make([]byte, 17)
	if f, err := os.Open(disk); err != nil {
		t.Fatal(err)
	} else {
		_, _ = f.ReadAt(got, 1<<20)
		f.Close()
	}
	if string(got) != "metal volume data" {
		t.Errorf("the volume's data after the restart: %q", got)
	}

	// Deleted while the machine runs: unplugged, and its file removed.
	if code, body, _ := c.do("DELETE", loc, nil); code/100 != 2 {
		t.Fatalf("delete volume: %d %v", code, body)
	}
	if _, err := os.Stat(disk); !os.IsNotExist(err) {
		t.Errorf("the deleted volume's disk is still there: %v", err)
	}
	if restart("ForceRestart") {
		t.Error("SeaBIOS still finds the deleted volume")
	}
}

// lastBoot is what the last SeaBIOS to start wrote to the debug log at
// path, from its banner on; "" until one has started.
func lastBoot(path string) string {
	b, _ := os.ReadFile(path)
	s := string(b)
	i := strings.LastIndex(s, "SeaBIOS (version ")
	if i < 0 {
		return ""
	}
	return s[i:]
}

// grepLines returns the lines of s holding any of words.
func grepLines(s string, words ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// TestBIOSKeptAcrossRestart: the BIOS settings in effect and those staged
// for the next reset outlive a restart of the BMC (StateDir, made by the
// BMC when missing), as a machine's NVRAM keeps them.
func TestBIOSKeptAcrossRestart(t *testing.T) {
	// Not there yet: the BMC makes it.
	dir := filepath.Join(t.TempDir(), "vbmc")
	spec := virtual.MachineSpec{Name: "vm-b", Machine: virtual.NewSim(virtual.SimOptions{Name: "vm-b"})}
	serve := func() (*virtual.Server, *rf) {
		srv, err := virtual.NewServer(virtual.Options{Auth: virtual.AuthNone, StateDir: dir}, spec)
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewServer(srv)
		t.Cleanup(ts.Close)
		return srv, &rf{t: t, base: ts.URL}
	}
	_, c := serve()
	const sys = "/redfish/v1/Systems/vm-b"
	if code, body, _ := c.do("PATCH", sys+"/Bios/Settings", map[string]any{"Attributes": map[string]any{"ProcVirtualization": "Enabled", "PxeRetries": 3}}); code != 204 {
		t.Fatalf("stage: %d %v", code, body)
	}
	srv, c := serve()
	attrs, pending, _ := srv.BIOS("vm-b")
	if attrs["ProcVirtualization"] != "Disabled" || pending["ProcVirtualization"] != "Enabled" || pending["PxeRetries"] != float64(3) {
		t.Fatalf("after a restart: in effect %v, pending %v", attrs, pending)
	}
	if code, body, _ := c.do("POST", sys+"/Actions/ComputerSystem.Reset", map[string]string{"ResetType": "On"}); code/100 != 2 {
		t.Fatalf("power on: %d %v", code, body)
	}
	srv, _ = serve()
	attrs, pending, _ = srv.BIOS("vm-b")
	if attrs["ProcVirtualization"] != "Enabled" || attrs["PxeRetries"] != float64(3) || len(pending) > 0 {
		t.Errorf("after the reset and a restart: in effect %v, pending %v", attrs, pending)
	}
}
