// Package applytest is a simulated rack for the converge engine's tests and
// benchmarks: machines with no VM (bmc/virtual.Sim), each behind its own
// virtual Redfish BMC on a loopback port, driven through the real bmc
// client; and a simulated install agent that, when a machine starts from
// the network, asks metal for its task and reports running, then done (or
// failed), over the real agent protocol (pxe/agentapi's client against its
// server: metal's daemon, or one the fleet serves itself over the store).
package applytest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/metal-dev/metal/bmc/virtual"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/pxe"
	"github.com/metal-dev/metal/pxe/agentapi"
	"github.com/metal-dev/metal/pxe/storeagent"
)

// Credentials of every simulated BMC.
const (
	User     = "admin"
	Password = "sim-not-secret"
)

// Options shape a fleet.
type Options struct {
	// Machines is how many; Racks how many racks they are spread over
	// (contiguously: the first Machines/Racks are in rack r0, ...).
	Machines, Racks int
	// Store is the inventory. It may be nil when AgentURL is set: the
	// agents then learn their task from metal alone, as real agents do
	// (metal may hold an embedded store locked; disk images only).
	Store inventory.Store
	// AgentURL is the metal HTTP server the agents talk to, and
	// TokenKey the file holding its token key (daemon's state dir
	// token.key), read at each boot. Empty AgentURL: the fleet serves the
	// agent protocol over Store itself.
	AgentURL string
	TokenKey string
	// AgentTime is how long the simulated agent takes to install (0:
	// instant); RebootAfter is how long after reporting done it restarts
	// the machine, as the real agent does (0: it does not).
	AgentTime   time.Duration
	RebootAfter time.Duration
	// FlashTime is how long a BMC takes to install firmware once it has
	// the image (0: 200 ms).
	FlashTime time.Duration
	// Drives is how many 64 GiB drives each machine's RAID controller
	// has (0: the virtual BMC's one).
	Drives int
	// Listen makes each BMC's listener (default a loopback port): a
	// metal running in another network namespace reaches BMCs listening
	// on an address of its link.
	Listen func() (net.Listener, error)
	// Dial is how the installed OS reaches metal to phone home (default
	// this host's network).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// SecureBoot gives the machines named in it UEFI firmware with
	// Secure Boot on (true) or off, which their BMCs report; the others'
	// BMCs have no SecureBoot resource.
	SecureBoot map[string]bool
	Logger     *slog.Logger
}

// Fleet is a running simulated rack. Its BMCs serve until Close.
type Fleet struct {
	opts  Options
	names []string
	sims  map[string]*virtual.Sim
	bmcs  map[string]*virtual.Server
	addrs map[string]string
	macs  map[string]string
	stop  context.CancelFunc
	wg    sync.WaitGroup
	// files are the images' local files, by base name.
	files map[string]imageFile
	dir   string
	// agentURL and key are where agents report and what they sign with.
	agentURL string
	key      []byte

	mu        sync.Mutex
	installs  map[string]int // agent tasks of kind install reported done
	written   map[string]int // images written, whether metal heard of it or not
	wipes     map[string]int
	started   map[string]int // agent tasks started
	failAgent map[string]string
	dead      map[string]bool
	// silent are machines whose installed OS never phones home; hung
	// those whose OS never starts.
	silent map[string]bool
	hung   map[string]bool
	osDHCP bool
	// phoneHomes are the phone-home URLs of the last installs, in the
	// order they are tried; answered, the one that took each phone-home.
	phoneHomes map[string][]string
	answered   map[string]string
	client     *http.Client
	order      []string // machines in the order their agent started
	agentCalls sync.WaitGroup
}

// Name is the name of machine i, as SiteHCL declares it.
func Name(i int) string { return fmt.Sprintf("m%04d", i) }

// Start serves a BMC for each machine.
func Start(opts Options) (*Fleet, error) {
	if opts.Racks <= 0 {
		opts.Racks = 1
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	listen := opts.Listen
	if listen == nil {
		listen = func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Fleet{
		opts: opts, sims: map[string]*virtual.Sim{}, bmcs: map[string]*virtual.Server{}, addrs: map[string]string{}, macs: map[string]string{}, stop: cancel,
		installs: map[string]int{}, written: map[string]int{}, wipes: map[string]int{}, started: map[string]int{}, failAgent: map[string]string{}, dead: map[string]bool{}, silent: map[string]bool{}, hung: map[string]bool{}, phoneHomes: map[string][]string{}, answered: map[string]string{},
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: opts.Dial}},
	}
	if err := f.makeImages(); err != nil {
		f.Close()
		return nil, err
	}
	f.agentURL = opts.AgentURL
	if f.agentURL == "" && opts.Store == nil {
		f.Close()
		return nil, errors.New("applytest: a fleet needs a Store or an AgentURL")
	}
	if f.agentURL == "" {
		if err := f.serveAgentAPI(ctx); err != nil {
			f.Close()
			return nil, err
		}
	}
	for i := range opts.Machines {
		name := Name(i)
		simOpts := virtual.SimOptions{Name: name, OnBoot: f.boot}
		if on, ok := opts.SecureBoot[name]; ok {
			simOpts.SecureBoot = &on
		}
		sim := virtual.NewSim(simOpts)
		spec := virtual.MachineSpec{Name: name, Machine: sim, Manufacturer: "metal-sim"}
		if opts.Drives > 0 {
			hw := virtual.DefaultHardware(spec)
			hw.Drives = nil
			for d := range opts.Drives {
				hw.Drives = append(hw.Drives, virtual.Drive{Model: "QEMU HARDDISK", Serial: fmt.Sprintf("%s-disk-%d", name, d), Bytes: 64 << 30, Media: "SSD", Protocol: "SATA", Health: "OK"})
			}
			spec.Hardware = &hw
		}
		srv, err := virtual.NewServer(virtual.Options{Username: User, Password: Password, Log: opts.Logger, FlashTime: cmp.Or(opts.FlashTime, 200*time.Millisecond)}, spec)
		if err != nil {
			f.Close()
			return nil, err
		}
		ln, err := listen()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("bmc listener %d of %d (ulimit -n?): %w", i+1, opts.Machines, err)
		}
		f.names = append(f.names, name)
		f.sims[name] = sim
		f.bmcs[name] = srv
		f.addrs[name] = "http://" + ln.Addr().String()
		f.macs[name] = fmt.Sprintf("02:00:00:00:%02x:%02x", i/256, i%256)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			if err := srv.Serve(ctx, ln, nil); err != nil {
				opts.Logger.Error("simulated bmc stopped", "machine", name, "err", err)
			}
		}()
	}
	return f, nil
}

// Close stops the BMCs, waits for running agents and removes the images.
func (f *Fleet) Close() {
	f.stop()
	f.wg.Wait()
	f.agentCalls.Wait()
	if f.dir != "" {
		_ = os.RemoveAll(f.dir)
	}
}

// imageFile is one local image file and its checksum.
type imageFile struct{ path, sum string }

// makeImages writes the small files the site's images name.
func (f *Fleet) makeImages() error {
	dir, err := os.MkdirTemp("", "applytest-images-")
	if err != nil {
		return err
	}
	f.dir = dir
	f.files = map[string]imageFile{}
	for _, name := range []string{"os.raw", "os2.raw", "vmlinuz", "initrd.img"} {
		content := []byte("simulated " + name + "\n")
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, content, 0o644); err != nil {
			return err
		}
		sum := sha256.Sum256(content)
		f.files[name] = imageFile{path: p, sum: "sha256:" + hex.EncodeToString(sum[:])}
	}
	return nil
}

// Names lists the machines in order.
func (f *Fleet) Names() []string { return append([]string(nil), f.names...) }

// Sim returns a machine's simulation (its power, boots, failures).
func (f *Fleet) Sim(name string) *virtual.Sim { return f.sims[name] }

// BMC is machine name's virtual BMC.
func (f *Fleet) BMC(name string) *virtual.Server { return f.bmcs[name] }

// Addr is the URL of machine name's BMC.
func (f *Fleet) Addr(name string) string { return f.addrs[name] }

// Rack is the rack label of machine i.
func (f *Fleet) Rack(i int) string {
	per := (f.opts.Machines + f.opts.Racks - 1) / f.opts.Racks
	return fmt.Sprintf("r%d", i/per)
}

// FailAgent makes the agent of machine name report failure with cause.
func (f *Fleet) FailAgent(name, cause string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failAgent[name] = cause
}

// Dead makes machine name power on and then do nothing at all, as a VM
// whose accelerator runs no guest or whose NIC is on no network: no DHCP,
// no fetch, no agent.
func (f *Fleet) Dead(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dead[name] = true
}

// FailOS makes the installed OS of machine name never report in: its
// image is written and it starts (asks for its address), but it never
// phones home.
func (f *Fleet) FailOS(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.silent[name] = true
}

// OSAsksDHCP makes the installed OSes ask metal's DHCP server for their
// address as they come up: each such request is recorded in the store, as
// the daemon records it (a synced write each, so only tests that look for
// them ask).
func (f *Fleet) OSAsksDHCP() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.osDHCP = true
}

// HangReboot makes machine name stop once its agent reported the install
// done, as an agent whose kernel hangs on the way down: the image is
// written, and nothing of its OS is ever seen.
func (f *Fleet) HangReboot(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hung[name] = true
}

// ReadyURL is the phone-home URL of the machine with mac, as metal's
// daemon makes it (the engine's Options.ReadyURL): the fleet's installed
// OSes post to it once their install is done (after RebootAfter).
func (f *Fleet) ReadyURL(mac, secret string) string {
	return f.agentURL + agentapi.ReadyPath(mac, secret)
}

// Installs returns how many install tasks each machine's agent finished.
func (f *Fleet) Installs() map[string]int { return f.count(f.installs) }

// Written returns how many times each machine's disk had an image written
// to the end: unlike Installs, a write counts even when metal never got
// the report (it was killed before answering, and the machine had moved
// on by the retry), so a machine provisioned twice shows 2 here.
func (f *Fleet) Written() map[string]int { return f.count(f.written) }

// Wipes returns how many wipe tasks each machine's agent finished.
func (f *Fleet) Wipes() map[string]int { return f.count(f.wipes) }

// Started returns how many agent tasks each machine started.
func (f *Fleet) Started() map[string]int { return f.count(f.started) }

// AgentOrder returns machines in the order their agents started.
func (f *Fleet) AgentOrder() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.order...)
}

func (f *Fleet) count(m map[string]int) map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// SiteHCL returns a site declaring the fleet: each machine with its MAC,
// rack label, the disk image "os" and its BMC; state is the state URL and
// rollout the body of the rollout block (may be empty). It also declares
// the disk image "os2" (other content) and the diskless image "live", all
// small local files the fleet made, so nothing is fetched from outside.
func (f *Fleet) SiteHCL(state, rollout string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "site \"sim\" {\n  state = %q\n}\n\n", state)
	b.WriteString(`network "lan" {
  subnet = "192.0.2.0/24"
  mode   = "off"
}

`)
	for _, im := range []string{"os", "os2"} {
		fmt.Fprintf(&b, "image %q {\n  disk     = %q\n  checksum = %q\n}\n\n", im, "file://"+f.files[im+".raw"].path, f.files[im+".raw"].sum)
	}
	fmt.Fprintf(&b, "image \"live\" {\n  kernel = %q\n  initrd = [%q]\n}\n\n", "file://"+f.files["vmlinuz"].path, "file://"+f.files["initrd.img"].path)
	for i, n := range f.names {
		fmt.Fprintf(&b, `machine %q {
  mac     = %q
  network = "lan"
  image   = image.os
  labels  = { rack = %q }
  bmc {
    protocol = "redfish"
    address  = %q
    username = %q
    password = %q
  }
}
`, n, f.macs[n], f.Rack(i), f.addrs[n], User, Password)
	}
	if rollout != "" {
		fmt.Fprintf(&b, "\nrollout {\n%s\n}\n", rollout)
	}
	return []byte(b.String())
}

// serveAgentAPI serves the agent protocol over the store on a loopback
// port, as metal's daemon does, for tests that run no daemon.
func (f *Fleet) serveAgentAPI(ctx context.Context) error {
	f.key = []byte("applytest-token-key")
	srv, err := storeagent.New(storeagent.Config{Store: f.opts.Store, Logger: f.opts.Logger})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	f.agentURL = "http://" + ln.Addr().String()
	mux := http.NewServeMux()
	mux.Handle(agentapi.Prefix, srv)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	f.wg.Add(2)
	go func() {
		defer f.wg.Done()
		_ = hs.Serve(ln)
	}()
	go func() {
		defer f.wg.Done()
		<-ctx.Done()
		_ = hs.Close()
	}()
	return nil
}

// tokenKey is the key agents sign their reports with.
func (f *Fleet) tokenKey() []byte {
	if f.key != nil {
		return f.key
	}
	b, err := os.ReadFile(f.opts.TokenKey)
	if err != nil {
		return nil
	}
	return b
}

// taskSecret is what a real machine reads on its kernel command line: the
// one-time secret of its agent task. With the store at hand it is read
// there; without, the machine fetches its boot script from metal as iPXE
// would (with the machine's script token, since the simulated machine
// does not hold its lease) and takes metal.token= from the kernel line.
func (f *Fleet) taskSecret(ctx context.Context, name string, mac net.HardwareAddr) (string, error) {
	if st := f.opts.Store; st != nil {
		rec, err := st.Machine(ctx, name)
		if err != nil {
			return "", err
		}
		if rec.Intent.Task == nil {
			return "", nil
		}
		return rec.Intent.Task.Secret, nil
	}
	u := f.agentURL + "/ipxe/" + mac.String() + "?token=" + pxe.Token(f.tokenKey(), mac)
	var body []byte
	refused := false
	err := retry(ctx, func() error {
		if refused {
			return nil
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if resp.StatusCode == http.StatusForbidden {
			// A one-time script already used: as iPXE, give up on it.
			refused = true
		}
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("boot script: %s: %s", resp.Status, bytes.TrimSpace(body))
		}
		return err
	})
	if err != nil {
		return "", err
	}
	if refused {
		return "", fmt.Errorf("boot script refused: %s", bytes.TrimSpace(body))
	}
	for _, f := range strings.Fields(string(body)) {
		if v, ok := strings.CutPrefix(f, "metal.token="); ok {
			return v, nil
		}
	}
	return "", nil
}

// boot is every simulated start: from the network, with an agent task in
// the intent, the agent runs it; a diskless image (no task) fetches its
// kernel, which the daemon would record as an event.
func (f *Fleet) boot(b virtual.SimBoot) {
	f.mu.Lock()
	dead := f.dead[b.Machine]
	f.mu.Unlock()
	if b.Target != "Pxe" || dead {
		return
	}
	f.agentCalls.Add(1)
	defer f.agentCalls.Done()
	ctx := b.Ctx
	// With the store at hand, a boot follows the intent as metal's boot
	// servers would; without it, the agent asks metal for its task.
	if st := f.opts.Store; st != nil {
		rec, err := st.Machine(ctx, b.Machine)
		if err != nil || rec.Intent.Action != inventory.BootInstall {
			return
		}
		if rec.Intent.Task == nil {
			_, _ = st.AppendEvent(ctx, inventory.Event{Time: time.Now(), Machine: b.Machine, MAC: rec.MAC,
				Kind: inventory.EventKernel, Message: "GET " + rec.Intent.Kernel})
			return
		}
	}
	mac, err := net.ParseMAC(f.macs[b.Machine])
	if err != nil {
		return
	}
	secret, err := f.taskSecret(ctx, b.Machine, mac)
	if err != nil {
		f.opts.Logger.Debug("simulated agent: no boot script", "machine", b.Machine, "err", err)
		return
	}
	c := &agentapi.Client{BaseURL: f.agentURL, MAC: mac, Token: secret}
	var task *agentapi.Task
	err = retry(ctx, func() error {
		resp, err := c.Task(ctx)
		task = resp.Task
		return err
	})
	if err != nil || task == nil {
		f.opts.Logger.Debug("simulated agent: no task", "machine", b.Machine, "err", err)
		return
	}
	f.mu.Lock()
	f.started[b.Machine]++
	f.order = append(f.order, b.Machine)
	cause := f.failAgent[b.Machine]
	f.mu.Unlock()
	if f.report(ctx, c, agentapi.Status{TaskID: task.ID, Phase: agentapi.PhaseRunning, Step: "writing"}) != nil {
		return
	}
	if task.Kind == agentapi.TaskWipe && cause == "" {
		// The erase record of the simulated disk, by the method asked.
		method := task.Wipe
		if method == "" {
			method = agentapi.WipeQuick
		}
		rec := agentapi.EraseRecord{Disk: "vda", Serial: "sim-" + b.Machine, Method: method, Mechanism: "simulated",
			Bytes: 64 << 20, Verified: true, VerifiedBytes: 2 << 20}
		if f.report(ctx, c, agentapi.Status{TaskID: task.ID, Phase: agentapi.PhaseRunning, Step: "erased vda", Erase: &rec}) != nil {
			return
		}
	}
	if f.opts.AgentTime > 0 {
		select {
		case <-time.After(f.opts.AgentTime):
		case <-ctx.Done():
			return // powered off mid-install
		}
	}
	final := agentapi.Status{TaskID: task.ID, Phase: agentapi.PhaseDone, Step: "rebooting"}
	if cause != "" {
		final = agentapi.Status{TaskID: task.ID, Phase: agentapi.PhaseFailed, Step: "writing", Error: cause}
	}
	// Counted before the report, so the count is there by the time the
	// engine sees the report; taken back if metal never got it.
	counter := f.installs
	if task.Kind == agentapi.TaskWipe {
		counter = f.wipes
	}
	if cause == "" {
		f.mu.Lock()
		counter[b.Machine]++
		if task.Kind == agentapi.TaskInstall {
			f.written[b.Machine]++
		}
		f.mu.Unlock()
	}
	// metal may power the machine off as soon as it has the final
	// report, before its answer is read: that must not undo the report.
	if f.report(context.WithoutCancel(ctx), c, final) != nil {
		if cause == "" {
			f.mu.Lock()
			counter[b.Machine]--
			f.mu.Unlock()
		}
		return
	}
	if cause == "" && task.Kind == agentapi.TaskInstall {
		// The installed OS comes up (after the reboot), asks for its
		// address and cloud-init phones home.
		defer f.osUp(ctx, b.Machine, append([]string{task.PhoneHome}, task.PhoneHomeAlso...))
	}
	if cause == "" {
		if f.opts.RebootAfter > 0 {
			select {
			case <-time.After(f.opts.RebootAfter):
				_ = f.sims[b.Machine].Reset(context.Background())
			case <-ctx.Done():
			}
		}
	}
}

// osUp is the installed OS of machine name starting: unless its reboot
// hangs, it asks for its address (recorded as metal's DHCP server would,
// after OSAsksDHCP) and, unless it was made to fail, posts to urls as
// metal's seed has it phone home (cloud-init's phone_home, then the
// site's other metal serves in order), retrying for a while.
func (f *Fleet) osUp(ctx context.Context, name string, urls []string) {
	if urls[0] == "" {
		urls = nil
	}
	f.mu.Lock()
	silent, hung, dhcp := f.silent[name], f.hung[name], f.osDHCP
	if len(urls) > 0 {
		f.phoneHomes[name] = urls
	}
	f.mu.Unlock()
	if hung {
		return
	}
	if st := f.opts.Store; st != nil && dhcp {
		_, _ = st.AppendEvent(context.WithoutCancel(ctx), inventory.Event{Time: time.Now(), Machine: name, MAC: f.macs[name],
			Kind: inventory.EventDHCPDiscover, Message: "DHCP from " + f.macs[name]})
	}
	if silent || len(urls) == 0 {
		return
	}
	f.post(name, urls)
}

// PhoneHomeNow makes the installed OS of machine name phone home now (one
// FailOS kept silent, say), with its last install's URLs. An OS that has
// not come up yet (its agent reported done, but the reboot is still under
// way) is waited for, for a while: a real one phones home once it is up,
// however soon metal starts waiting for it.
func (f *Fleet) PhoneHomeNow(name string) bool {
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		f.mu.Lock()
		urls := f.phoneHomes[name]
		f.mu.Unlock()
		if len(urls) > 0 {
			return f.post(name, urls)
		}
		if time.Now().After(deadline) {
			f.opts.Logger.Debug("simulated OS: never came up to phone home", "machine", name)
			return false
		}
	}
}

// PhoneHomes returns, per machine, the URL its installed OS's phone-home
// got through to, and the URLs it had in order (the first is the metal
// that wrote its install's task).
func (f *Fleet) PhoneHomes() (answered map[string]string, urls map[string][]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.answered), maps.Clone(f.phoneHomes)
}

// post tries urls in order, round after round for a while, until one
// takes the phone-home; a refusal (not the current install) ends it.
func (f *Fleet) post(name string, urls []string) bool {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, url := range urls {
			resp, err := f.client.Post(url, "application/x-www-form-urlencoded", strings.NewReader("hostname="+name))
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				f.mu.Lock()
				f.answered[name] = url
				f.mu.Unlock()
				return true
			}
			if resp.StatusCode == http.StatusForbidden {
				return false
			}
		}
	}
	f.opts.Logger.Debug("simulated OS: phone-home never got through", "machine", name)
	return false
}

// report sends a status, retrying while metal is unreachable (restarting,
// as after a kill), as the real agent does.
func (f *Fleet) report(ctx context.Context, c *agentapi.Client, s agentapi.Status) error {
	err := retry(ctx, func() error { return c.Status(ctx, s) })
	if err != nil {
		f.opts.Logger.Debug("simulated agent report", "mac", c.MAC.String(), "err", err)
	}
	return err
}

// retry calls fn until it succeeds, the task is stale, or a minute passes.
func retry(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := fn()
		if err == nil || errors.Is(err, agentapi.ErrStaleTask) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
