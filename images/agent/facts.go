package agent

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/metal-dev/metal/pxe/agentapi"
)

// Facts reads the machine's hardware from the /proc and /sys under root
// ("/" on the machine; a testdata copy in tests). Missing files leave their
// fact empty: a machine without DMI still reports its disks.
func Facts(root string) agentapi.Hardware {
	return agentapi.Hardware{
		CPU:         cpuFacts(root),
		MemoryBytes: memTotal(root),
		Disks:       Disks(root),
		NICs:        NICs(root),
		DMI:         dmiFacts(root),
	}
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// cpuFacts counts /proc/cpuinfo's processors (threads), distinct physical
// ids (sockets) and cores per socket.
func cpuFacts(root string) agentapi.CPU {
	f, err := os.Open(filepath.Join(root, "proc/cpuinfo"))
	if err != nil {
		return agentapi.CPU{}
	}
	defer f.Close()
	var c agentapi.CPU
	sockets := map[string]bool{}
	coresPerSocket := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "processor":
			c.Threads++
		case "model name":
			if c.Model == "" {
				c.Model = v
			}
		case "physical id":
			sockets[v] = true
		case "cpu cores":
			if n, err := strconv.Atoi(v); err == nil && n > coresPerSocket {
				coresPerSocket = n
			}
		}
	}
	c.Sockets = len(sockets)
	if c.Sockets == 0 && c.Threads > 0 {
		c.Sockets = 1
	}
	c.Cores = coresPerSocket * c.Sockets
	if c.Cores == 0 {
		c.Cores = c.Threads
	}
	return c
}

func memTotal(root string) uint64 {
	b, err := os.ReadFile(filepath.Join(root, "proc/meminfo"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// virtualDisk names block devices that are not disks a machine can be
// installed on.
func virtualDisk(name string) bool {
	for _, p := range []string{"loop", "ram", "zram", "sr", "dm-", "md", "nbd", "fd"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// Disks lists the machine's disks from /sys/block, sorted by name, with
// their size (the sysfs size is always in 512-byte sectors), model and
// serial. Removable media are left out.
func Disks(root string) []agentapi.Disk {
	dir := filepath.Join(root, "sys/block")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []agentapi.Disk
	for _, e := range entries {
		name := e.Name()
		if virtualDisk(name) {
			continue
		}
		p := filepath.Join(dir, name)
		if readTrim(filepath.Join(p, "removable")) == "1" {
			continue
		}
		sectors, _ := strconv.ParseUint(readTrim(filepath.Join(p, "size")), 10, 64)
		d := agentapi.Disk{
			Name:       name,
			SizeBytes:  sectors * 512,
			Model:      readTrim(filepath.Join(p, "device/model")),
			Serial:     diskSerial(p),
			Rotational: readTrim(filepath.Join(p, "queue/rotational")) == "1",
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// diskSerial tries where each driver puts it: virtio-blk's serial, NVMe's
// device/serial, and SCSI/SATA's unit serial number VPD page (0x80: four
// header bytes, then the serial).
func diskSerial(p string) string {
	for _, f := range []string{"serial", "device/serial"} {
		if s := readTrim(filepath.Join(p, f)); s != "" {
			return s
		}
	}
	if b, err := os.ReadFile(filepath.Join(p, "device/vpd_pg80")); err == nil && len(b) > 4 {
		return strings.TrimSpace(string(bytes.Trim(b[4:], "\x00")))
	}
	return ""
}

// NICs lists the machine's Ethernet interfaces from /sys/class/net: those
// backed by a device (so not lo, bridges or tunnels), sorted by name.
func NICs(root string) []agentapi.NIC {
	dir := filepath.Join(root, "sys/class/net")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []agentapi.NIC
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if readTrim(filepath.Join(p, "type")) != "1" { // ARPHRD_ETHER
			continue
		}
		if _, err := os.Stat(filepath.Join(p, "device")); err != nil {
			continue
		}
		n := agentapi.NIC{Name: e.Name(), MAC: readTrim(filepath.Join(p, "address"))}
		if speed, err := strconv.Atoi(readTrim(filepath.Join(p, "speed"))); err == nil && speed > 0 {
			n.SpeedMbps = speed
		}
		if drv, err := os.Readlink(filepath.Join(p, "device/driver")); err == nil {
			n.Driver = filepath.Base(drv)
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func dmiFacts(root string) agentapi.DMI {
	id := filepath.Join(root, "sys/class/dmi/id")
	return agentapi.DMI{
		Vendor:      readTrim(filepath.Join(id, "sys_vendor")),
		Product:     readTrim(filepath.Join(id, "product_name")),
		Serial:      readTrim(filepath.Join(id, "product_serial")),
		UUID:        readTrim(filepath.Join(id, "product_uuid")),
		BIOSVersion: readTrim(filepath.Join(id, "bios_version")),
	}
}
