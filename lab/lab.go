// Package lab makes and unmakes metal's QEMU lab: a network namespace with
// a bridge and one tap per VM (the host network is never touched), a blank
// disk per VM, a BMC per VM (metal's virtual Redfish BMC, and OpenIPMI's
// ipmi_sim for one VM so both protocols run) that starts QEMU on power-on,
// the lab's site file, and `metal serve` for it inside the namespace.
//
// Long-lived processes are detached children recorded with their start
// times in DIR/lab.json; Down stops exactly those (and the VMs their BMCs
// started, by pid file), then removes the taps, the bridge and the
// namespace. Up after a crash cleans what the last lab left first.
package lab

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/metal-dev/metal/bmc/ipmisim"
	"github.com/metal-dev/metal/images/initramfs"
	"github.com/metal-dev/metal/images/iso"
	"github.com/metal-dev/metal/internal/netns"
	"github.com/metal-dev/metal/internal/qemu"
)

// The lab's addresses, all inside its own namespace. Only documentation
// ranges are used.
const (
	subnet    = "192.0.2.0/24"
	serverIP  = "192.0.2.1" // metal serve: DHCP, TFTP, HTTP
	redfishIP = "192.0.2.2" // metal vbmc, one port per VM
	ipmiIP    = "192.0.2.3" // ipmi_sim
	poolStart = "192.0.2.200"
	poolEnd   = "192.0.2.240"
	httpPort  = 8080
	// apiAddr is where metal serve's console, API and metrics listen: its
	// default, loopback inside the lab's namespace, off the boot network.
	apiAddr = "127.0.0.1:9090"
	// solAddr is where the IPMI VM's serial line (ServeSerialLine) takes
	// ipmi_sim's Serial-over-LAN connection: loopback inside the lab's
	// namespace.
	solAddr = "127.0.0.1:9623"
	// bridge is the lab's switch; its name is local to the namespace.
	bridge = "br0"
	// firstHost is the last octet of the first VM's address.
	firstHost = 10
	// MaxMachines keeps VM addresses below the dynamic pool.
	MaxMachines = 100
	username    = "admin"
)

// File names inside the lab directory.
const (
	StateFile    = "lab.json"
	SiteFile     = "site.hcl"
	passwordFile = "bmc-password"
	imageFile    = "images/lab-os.img"
)

// Config says what lab to make.
type Config struct {
	// Dir holds everything of the lab: site file, disks, logs, sockets.
	Dir string
	// Machines is the number of VMs; UEFI of them boot OVMF, the rest
	// SeaBIOS.
	Machines int
	UEFI     int
	// BootPaths adds one VM per boot path (BootPaths, ParseBootPaths)
	// after the Machines VMs, named after its path, with the segments,
	// BMC and firmware the path needs. Machines may then be 0.
	BootPaths []string
	// Metal is the metal binary run as the virtual BMC and as `metal
	// serve`; default: this program.
	Metal string
	// NoServe leaves `metal serve` out (metal apply then runs the servers
	// itself for the length of the apply).
	NoServe bool
	// ServeArgs go to `metal serve` before the site file, every time the
	// lab starts it (such as --backup-to for a disaster-recovery standby).
	ServeArgs []string
	// MemoryMiB of each VM (default 1024) and DiskBytes of its blank disk
	// (default 4 GiB, sparse).
	MemoryMiB int
	DiskBytes int64
	// BuildImage writes the image the lab's machines are provisioned with
	// to path, when the lab directory has none yet. Default:
	// BuildTestImage.
	BuildImage func(ctx context.Context, path string) error
	// Accel is how the VMs' accelerator is chosen: qemu.Auto (the
	// default: KVM if a probe guest runs under it, else TCG), qemu.KVM or
	// qemu.TCG.
	Accel string
	// KVMDevice is the KVM device the probe opens (default /dev/kvm).
	KVMDevice string
	// Canary is the site's rollout canary (default 0: every VM in one
	// batch, all at once); with one, the rest go one batch after it.
	Canary int
	// OSReadyTimeout is the lab image's ready_timeout (default the
	// site's default).
	OSReadyTimeout string
	// ReadyTimeout bounds the wait for the BMCs and metal serve to answer
	// (default 10 minutes: serve may build the install agent first).
	ReadyTimeout time.Duration
	Log          *slog.Logger
}

// State is a lab as it was made; it is written to DIR/lab.json.
type State struct {
	Dir      string `json:"dir"`
	Netns    string `json:"netns"`
	Bridge   string `json:"bridge"`
	ServerIP string `json:"server_ip"`
	Site     string `json:"site"`
	Image    string `json:"image"` // relative to Dir, as the site names it
	Username string `json:"username"`
	// Canary and OSReadyTimeout are Config's, for the site file.
	Canary         int    `json:"canary,omitempty"`
	OSReadyTimeout string `json:"os_ready_timeout,omitempty"`
	// ServeArgs are the lab's `metal serve` flags (Config.ServeArgs).
	ServeArgs []string `json:"serve_args,omitempty"`
	// SecureBootDir holds Debian's signed shim and GRUBs when a VM boots
	// with Secure Boot on; SignedImage is then the image it installs,
	// which boots through them (relative to Dir).
	SecureBootDir string `json:"secureboot_dir,omitempty"`
	SignedImage   string `json:"signed_image,omitempty"`
	// Accel is the accelerator the VMs run under, and why.
	Accel   qemu.Choice `json:"accel"`
	VMs     []VM        `json:"vms"`
	Procs   []Proc      `json:"procs"`
	Created time.Time   `json:"created"`
}

// VM is one lab machine.
type VM struct {
	Name string `json:"name"`
	MAC  string `json:"mac"`
	// IP is empty, and IP6 set, on the IPv6-only link.
	IP  string `json:"ip,omitempty"`
	IP6 string `json:"ip6,omitempty"`
	// BootPath is how the VM reaches the install agent (BootPaths; the
	// default lab's UEFI VMs boot the NIC's iPXE ROM: "uefi-ipxe").
	BootPath string `json:"boot_path"`
	// Network is the site's network the VM is on, and Bridge the lab's
	// bridge its tap is plugged into.
	Network    string `json:"network"`
	Bridge     string `json:"bridge"`
	Firmware   string `json:"firmware"`
	SecureBoot bool   `json:"secure_boot,omitempty"`
	Protocol   string `json:"protocol"`
	BMCAddress string `json:"bmc_address"`
	Tap        string `json:"tap"`
	Disk       string `json:"disk"`
	Serial     string `json:"serial"`            // serial console log
	Console    string `json:"console,omitempty"` // serial console socket
	// SOL is the TCP address where ipmi_sim connects to the serial line
	// of a VM whose console is its BMC's Serial-over-LAN (the IPMI VM),
	// and Line the Unix socket where its QEMU connects to that line at
	// each power on (ServeSerialLine): only ipmi_sim is on it, as a real
	// BMC is the only one on a server's serial port. Console is then
	// empty.
	SOL      string `json:"sol,omitempty"`
	Line     string `json:"line,omitempty"`
	PIDFile  string `json:"pid_file"`
	OVMFVars string `json:"ovmf_vars,omitempty"`
	QMP      string `json:"qmp,omitempty"`
}

// HTTPURL is metal's HTTP boot server inside the lab.
func (st *State) HTTPURL() string { return "http://" + serverIP + ":" + strconv.Itoa(httpPort) }

// APIURL is metal's console, API and metrics listener: loopback inside the
// lab's namespace (reach it with `metal lab exec -- curl`, or a dialer
// into the namespace), never the lab's boot network.
func (st *State) APIURL() string { return "http://" + apiAddr }

// Proc returns the lab process called name, if it has one.
func (st *State) Proc(name string) (Proc, bool) {
	for _, p := range st.Procs {
		if p.Name == name {
			return p, true
		}
	}
	return Proc{}, false
}

// VM returns the lab's VM called name, if it has one.
func (st *State) VM(name string) (*VM, bool) {
	for i := range st.VMs {
		if st.VMs[i].Name == name {
			return &st.VMs[i], true
		}
	}
	return nil, false
}

// ConsoleLog is where the VMs' serial logs are, {machine} standing for the
// name (metal apply --console-log).
func (st *State) ConsoleLog() string {
	return filepath.Join(st.Dir, "vms", "{machine}", "serial.log")
}

// Command is argv to run inside the lab's network namespace.
func (st *State) Command(ctx context.Context, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", st.Netns}, argv...)...)
}

// ErrNoLab is returned by Load when the directory holds no lab.
var ErrNoLab = errors.New("no lab here")

// Load reads the lab made in dir.
func Load(dir string) (*State, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w (make one with metal lab up --dir %s)", dir, ErrNoLab, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	return &st, nil
}

func (st *State) save() error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(st.Dir, StateFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	return os.Rename(tmp, filepath.Join(st.Dir, StateFile))
}

func (c *Config) defaults() error {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	min := 1
	if len(c.BootPaths) > 0 {
		min = 0
	}
	if c.Machines < min || c.Machines+len(c.BootPaths) > MaxMachines {
		return fmt.Errorf("machines: %d is not between %d and %d", c.Machines, min, MaxMachines-len(c.BootPaths))
	}
	for _, p := range c.BootPaths {
		if !slices.Contains(BootPaths, p) {
			return fmt.Errorf("boot path %q: want one of %s", p, strings.Join(BootPaths, ", "))
		}
	}
	if c.UEFI < 0 || c.UEFI > c.Machines {
		return fmt.Errorf("uefi: %d is not between 0 and the number of machines (%d)", c.UEFI, c.Machines)
	}
	if _, err := qemu.ParseMode(c.Accel); err != nil {
		return err
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 1024
	}
	if c.DiskBytes == 0 {
		c.DiskBytes = 4 << 30
	}
	if c.BuildImage == nil {
		c.BuildImage = BuildTestImage
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 10 * time.Minute
	}
	if c.Metal == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the metal binary: %w", err)
		}
		c.Metal = exe
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return err
	}
	// QEMU's option syntax and vbmc's qemu-cmd split on commas and spaces;
	// Unix socket paths are limited to 107 bytes.
	if strings.ContainsAny(dir, ", \t\n\"'") {
		return fmt.Errorf("lab directory %q holds a comma, space or quote, which QEMU's options cannot carry; choose another --dir", dir)
	}
	if len(dir) > 70 {
		return fmt.Errorf("lab directory %q is too long for the VMs' Unix sockets (at most 70 bytes); choose a shorter --dir", dir)
	}
	c.Dir = dir
	return nil
}

// plan lays out the lab's VMs: the last UEFI of them boot OVMF; with two or
// more, the first is behind ipmi_sim and the rest behind Redfish.
func plan(c Config) *State {
	st := &State{
		Dir: c.Dir, Netns: NetnsName(c.Dir), Bridge: bridge, ServerIP: serverIP,
		Site: filepath.Join(c.Dir, SiteFile), Image: imageFile, Username: username,
		ServeArgs: c.ServeArgs,
		Canary:    c.Canary, OSReadyTimeout: c.OSReadyTimeout,
	}
	for i := 1; i <= c.Machines+len(c.BootPaths); i++ {
		vm := VM{
			Name: fmt.Sprintf("vm-%d", i), MAC: fmt.Sprintf("52:54:00:6d:6c:%02x", i),
			IP:       fmt.Sprintf("192.0.2.%d", firstHost+i),
			Firmware: BIOS, BootPath: PathBIOSPXE, Network: labNet, Bridge: bridge, Protocol: Redfish,
			BMCAddress: fmt.Sprintf("http://%s:%d", redfishIP, 8000+i),
			Tap:        fmt.Sprintf("tap%d", i),
		}
		switch {
		case i > c.Machines:
			vm = pathVM(vm, c.BootPaths[i-c.Machines-1], i)
		case i > c.Machines-c.UEFI:
			vm.Firmware, vm.BootPath = UEFI, pathUEFIIPXE
		}
		vmDir := filepath.Join(c.Dir, "vms", vm.Name)
		vm.Disk = filepath.Join(vmDir, "disk.raw")
		vm.Serial = filepath.Join(vmDir, "serial.log")
		vm.Console = filepath.Join(vmDir, "console.sock")
		vm.PIDFile = filepath.Join(vmDir, "qemu.pid")
		vm.QMP = filepath.Join(vmDir, "qmp.sock")
		if vm.Firmware == UEFI {
			vm.OVMFVars = filepath.Join(vmDir, "OVMF_VARS.fd")
		}
		if i == 1 && c.Machines >= 2 {
			vm.Protocol, vm.BMCAddress, vm.QMP = IPMI, ipmiIP+":623", ""
			vm.Console, vm.SOL, vm.Line = "", solAddr, filepath.Join(vmDir, "line.sock")
			// ipmisim.Write names the pid file it gives QEMU.
			vm.PIDFile = filepath.Join(vmDir, "ipmi", "qemu.pid")
		}
		st.VMs = append(st.VMs, vm)
	}
	return st
}

// Up makes the lab described by c, first removing whatever a previous lab
// in the same directory left behind. On failure it removes what it made and
// keeps the logs.
func Up(ctx context.Context, c Config) (_ *State, err error) {
	if err := c.defaults(); err != nil {
		return nil, err
	}
	log := c.Log
	st := plan(c)
	reqs := append(qemu.Tools(slices.ContainsFunc(st.VMs, func(vm VM) bool { return vm.Firmware == UEFI })),
		qemu.Tool{Path: "ip", Package: "iproute2"})
	if st.Uses(PathSecureBoot) {
		reqs = append(reqs, qemu.Tool{Path: qemu.OVMFCodeSecure, Package: "ovmf", File: true})
	}
	if c.Machines >= 2 {
		reqs = append(reqs, qemu.Tool{Path: "ipmi_sim", Package: "openipmi"}, qemu.Tool{Path: "ipmitool", Package: "ipmitool"})
	}
	if err := qemu.CheckTools(reqs...); err != nil {
		return nil, err
	}
	if st.Uses(PathVirtualMedia) {
		// metal serve builds the virtual-media VM's boot CD.
		if _, err := iso.FindTools(); err != nil {
			return nil, err
		}
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab creates a network namespace, which needs root: run it with sudo")
	}
	// metal serve and apply build the install agent inside the namespace,
	// where there is no network: fetch its kernel here first, into the
	// cache they look in.
	log.Info("finding the install agent's kernel (apt-get download when this host has no Debian kernel)")
	kernel, err := initramfs.FindKernel(ctx, initramfs.Options{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("the install agent's kernel: %w", err)
	}
	// Before anything is made: a KVM that opens but runs no guest, or
	// runs a boot sector but not that kernel, would leave every VM silent.
	if st.Accel, err = qemu.Choose(ctx, qemu.Options{Mode: c.Accel, Device: c.KVMDevice, Kernel: kernel.Vmlinuz, Log: log}); err != nil {
		return nil, err
	}

	if _, err := os.Stat(filepath.Join(c.Dir, StateFile)); err == nil || netns.Exists(st.Netns) {
		log.Info("removing what the last lab here left behind", "dir", c.Dir, "netns", st.Netns)
		if err := Down(ctx, c.Dir, log); err != nil {
			return nil, fmt.Errorf("clean up the previous lab: %w", err)
		}
	}
	// A fresh lab: blank disks, empty state, BMCs as from the factory
	// (their firmware versions and volumes), new logs. Built images stay.
	for _, d := range []string{"vms", "state", "vbmc", "logs"} {
		if err := os.RemoveAll(filepath.Join(c.Dir, d)); err != nil {
			return nil, fmt.Errorf("clear %s: %w", d, err)
		}
	}
	for _, d := range []string{"logs", "state", "images"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("lab directory: %w", err)
		}
	}
	defer func() {
		if err != nil {
			log.Error("lab up failed; removing what it made (logs stay)", "dir", c.Dir, "err", err)
			_ = st.save()
			if derr := Down(context.WithoutCancel(ctx), c.Dir, log); derr != nil {
				err = errors.Join(err, derr)
			}
		}
	}()
	st.Created = time.Now().UTC()
	if err := st.save(); err != nil {
		return nil, err
	}

	password, err := randomPassword()
	if err != nil {
		return nil, err
	}
	pwFile := filepath.Join(c.Dir, passwordFile)
	if err := os.WriteFile(pwFile, []byte(password), 0o600); err != nil {
		return nil, fmt.Errorf("write bmc password: %w", err)
	}
	if err := makeNetwork(ctx, st); err != nil {
		return nil, err
	}
	if err := makeDisks(st, c.DiskBytes); err != nil {
		return nil, err
	}
	if img := filepath.Join(c.Dir, imageFile); !exists(img) {
		log.Info("building the lab's disk image", "path", img)
		if err := c.BuildImage(ctx, img); err != nil {
			return nil, fmt.Errorf("build the lab's disk image: %w", err)
		}
	}
	// The agent writes only verified images.
	sum, err := fileSHA256(filepath.Join(c.Dir, imageFile))
	if err != nil {
		return nil, err
	}
	if st.Uses(PathSecureBoot) {
		if err := signedImage(ctx, c, st); err != nil {
			return nil, err
		}
	}
	fwSum, err := writeFirmware(c.Dir)
	if err != nil {
		return nil, err
	}
	signedSum := ""
	if st.SignedImage != "" {
		if signedSum, err = fileSHA256(filepath.Join(c.Dir, st.SignedImage)); err != nil {
			return nil, err
		}
	}
	siteHCL, err := renderSite(st, password, sum, signedSum, fwSum)
	if err != nil {
		return nil, err
	}
	// The site file holds the lab's BMC password as a default.
	if err := os.WriteFile(st.Site, siteHCL, 0o600); err != nil {
		return nil, fmt.Errorf("write site file: %w", err)
	}

	if err := startBMCs(ctx, c, st, password, pwFile); err != nil {
		return nil, err
	}
	if !c.NoServe {
		p, err := st.StartServe(ctx, c.Metal, c.ReadyTimeout)
		if err != nil {
			return nil, err
		}
		log.Info("metal serve started", "pid", p.PID, "url", st.HTTPURL(), "log", p.Log)
	}
	return st, nil
}

// makeNetwork creates the namespace, its bridge with the server's and the
// BMCs' addresses, and a tap per VM plugged into the bridge.
func makeNetwork(ctx context.Context, st *State) error {
	ns := st.Netns
	if err := netns.IP(ctx, "netns", "add", ns); err != nil {
		return err
	}
	steps := [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", bridge, "type", "bridge"},
		// No STP and no forwarding delay: a VM's first DHCP request must
		// pass at once, as on an edge port.
		{"link", "set", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		{"addr", "add", serverIP + "/24", "dev", bridge},
		{"addr", "add", redfishIP + "/24", "dev", bridge},
		{"addr", "add", ipmiIP + "/24", "dev", bridge},
		{"link", "set", bridge, "up"},
	}
	steps = append(steps, segmentSteps(st)...)
	for _, vm := range st.VMs {
		steps = append(steps,
			[]string{"tuntap", "add", vm.Tap, "mode", "tap"},
			[]string{"link", "set", vm.Tap, "master", vm.Bridge, "up"})
	}
	for _, s := range steps {
		if err := netns.IP(ctx, append([]string{"-n", ns}, s...)...); err != nil {
			return err
		}
	}
	return nil
}

// makeDisks creates each VM's directory, its blank sparse disk and, for
// UEFI, its own copy of OVMF's variable store.
func makeDisks(st *State, size int64) error {
	for _, vm := range st.VMs {
		if err := os.MkdirAll(filepath.Dir(vm.Disk), 0o755); err != nil {
			return fmt.Errorf("vm %s: %w", vm.Name, err)
		}
		f, err := os.Create(vm.Disk)
		if err != nil {
			return fmt.Errorf("vm %s: disk: %w", vm.Name, err)
		}
		err = f.Truncate(size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("vm %s: disk: %w", vm.Name, err)
		}
		newVars := qemu.NewOVMFVars
		if vm.SecureBoot {
			// Microsoft's keys enrolled: Secure Boot is on.
			newVars = qemu.NewOVMFVarsMS
		}
		if vm.OVMFVars != "" {
			if err := newVars(vm.OVMFVars); err != nil {
				return fmt.Errorf("vm %s: %w", vm.Name, err)
			}
		}
	}
	return nil
}

// startBMCs starts one metal vbmc for every Redfish VM (each on its own
// port) and an ipmi_sim for the IPMI VM, and waits until they answer.
func startBMCs(ctx context.Context, c Config, st *State, password, pwFile string) error {
	log := c.Log
	acc := st.Accel.Accel
	var vbmcArgs []string
	for _, vm := range st.VMs {
		cmd := qemuCommand(vm, c.MemoryMiB, acc)
		switch vm.Protocol {
		case Redfish:
			cmd = append(cmd, "-pidfile", vm.PIDFile)
			listen := strings.TrimPrefix(vm.BMCAddress, "http://")
			vbmcArgs = append(vbmcArgs, "--machine", fmt.Sprintf("name=%s,qmp=%s,mac=%s,serial=lab-%s,listen=%s,qemu-cmd=%s",
				vm.Name, vm.QMP, vm.MAC, vm.Name, listen, strings.Join(cmd, " ")))
		case IPMI:
			if err := startSerialLine(ctx, c, st, vm); err != nil {
				return err
			}
			files, err := ipmisim.Write(filepath.Dir(vm.PIDFile), ipmisim.Config{
				Name: vm.Name, Address: vm.BMCAddress, Username: username, Password: password,
				QEMU: cmd, SOL: "tcp:" + vm.SOL, Log: log,
			})
			if err != nil {
				return err
			}
			p, err := st.startRecorded(ctx, "ipmi_sim "+vm.Name, "ipmi_sim-"+vm.Name, time.Minute,
				func(wait context.Context, p Proc) error { return waitIPMI(wait, st.Netns, p, vm.BMCAddress, pwFile) },
				files.IPMISim, "-c", files.LanConf, "-f", files.Commands, "-n", "-s", files.StateDir)
			if err != nil {
				return fmt.Errorf("ipmi_sim for %s: %w", vm.Name, err)
			}
			log.Info("ipmi_sim started", "machine", vm.Name, "addr", vm.BMCAddress, "pid", p.PID)
		}
	}
	if len(vbmcArgs) == 0 {
		return nil
	}
	// The BMCs keep their machines' firmware versions, BIOS settings, RAID
	// volumes and the volumes' disks in the lab's directory, so they
	// outlive a restart of vbmc.
	args := append([]string{"vbmc", "--user", username, "--password-file", pwFile, "--state-dir", filepath.Join(c.Dir, "vbmc")}, vbmcArgs...)
	p, err := st.startRecorded(ctx, "vbmc", "vbmc", time.Minute, func(wait context.Context, p Proc) error {
		for _, vm := range st.VMs {
			if vm.Protocol != Redfish {
				continue
			}
			if err := waitHTTP(wait, st.Netns, p, vm.BMCAddress+"/redfish/v1/"); err != nil {
				return fmt.Errorf("virtual BMC of %s: %w", vm.Name, err)
			}
		}
		return nil
	}, c.Metal, args...)
	if err != nil {
		return err
	}
	log.Info("virtual Redfish BMC started", "pid", p.PID, "addr", redfishIP)
	return nil
}

// startSerialLine starts the IPMI VM's serial line inside the namespace
// and waits until it listens: ipmi_sim, started next, connects to it once.
func startSerialLine(ctx context.Context, c Config, st *State, vm VM) error {
	name := "serial line " + vm.Name
	_, err := st.startRecorded(ctx, name, "serial-line-"+vm.Name, time.Minute, func(wait context.Context, p Proc) error {
		return poll(wait, p, func() error { _, err := os.Stat(vm.Line); return err })
	}, c.Metal, "lab", "serial-line", "--bmc", vm.SOL, "--machine", vm.Line)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// startRecorded starts prog detached in the lab's namespace, its output in
// logs/LOGNAME.log, records it as name in the saved state (so that lab
// down stops it even if waiting fails), then waits up to timeout for ready
// to succeed while it runs.
func (st *State) startRecorded(ctx context.Context, name, logName string, timeout time.Duration,
	ready func(context.Context, Proc) error, prog string, args ...string) (Proc, error) {
	p, err := startDetached(st.Netns, name, filepath.Join(st.Dir, "logs", logName+".log"), os.Environ(), prog, args...)
	if err != nil {
		return Proc{}, err
	}
	st.Procs = append(st.Procs, p)
	if err := st.save(); err != nil {
		return p, err
	}
	wait, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return p, ready(wait, p)
}

// waitHTTP polls url from inside namespace ns until it answers at all,
// while p runs.
func waitHTTP(ctx context.Context, ns string, p Proc, url string) error {
	client := &http.Client{
		Transport: &http.Transport{DialContext: netns.Dialer(ns), DisableKeepAlives: true},
		Timeout:   5 * time.Second,
	}
	return poll(ctx, p, func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	})
}

// waitIPMI asks ipmi_sim for the chassis power state with ipmitool, from
// inside the namespace, until it answers: the BMC works end to end.
func waitIPMI(ctx context.Context, ns string, p Proc, addr, pwFile string) error {
	host, port, _ := strings.Cut(addr, ":")
	return poll(ctx, p, func() error {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ipmitool", "-I", "lanplus", "-C", "3",
			"-H", host, "-p", port, "-U", username, "-f", pwFile, "chassis", "power", "status").CombinedOutput()
		if err != nil {
			return fmt.Errorf("ipmitool: %w: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	})
}

// poll calls try until it succeeds, p exits (its log's tail is the error)
// or ctx ends.
func poll(ctx context.Context, p Proc, try func() error) error {
	var last error
	for {
		if last = try(); last == nil {
			return nil
		}
		if !p.Running() {
			return fmt.Errorf("%s exited; the end of %s:\n%s", p.Name, p.Log, tail(p.Log, 20))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer (%v): %w; see %s", p.Name, last, ctx.Err(), p.Log)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// randomPassword is 16 letters and digits: IPMI allows 20 bytes, and the
// password goes into HCL and ipmi_sim's configuration unquoted.
func randomPassword() (string, error) {
	const alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 16)
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			return "", fmt.Errorf("generate bmc password: %w", err)
		}
		b[i] = alphabet[n.Int64()]
	}
	return string(b), nil
}

// fileSHA256 is a file's checksum as the site language writes it.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("checksum: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("checksum %s: %w", path, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
