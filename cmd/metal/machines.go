package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/metal-dev/metal/daemon"
	apiclient "github.com/metal-dev/metal/daemon/api/client"
	"github.com/metal-dev/metal/internal/humanize"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/inventory/bolt"
	"github.com/metal-dev/metal/site"
)

// stateFlags say which state store a verb works on: the one the site file
// names, or --state.
type stateFlags struct {
	vars  varFlags
	site  siteFlag
	state string
}

func (f *stateFlags) register(cmd *cobra.Command, persistent bool) {
	fs := cmd.Flags()
	if persistent {
		fs = cmd.PersistentFlags()
	}
	f.site.register(fs)
	fs.StringVar(&f.state, "state", "", "the state store URL, instead of the site's (file://PATH, etcd://HOST:PORT/PREFIX)")
	fs.StringArrayVar(&f.vars.vars, "var", nil, "set a variable of the site file: -var NAME=VALUE (repeatable)")
	fs.StringArrayVar(&f.vars.varFiles, "var-file", nil, "read variables of the site file from an HCL file (repeatable)")
}

// siteState is what a verb learns from the site file: the site's name and
// its state URL, resolved against the file's directory.
type siteState struct {
	Name  string
	State string
}

// resolve loads the site file (unless --state makes it unneeded and
// needSite is false) and returns the site's name and state URL.
func (f *stateFlags) resolve(a *app, needSite bool) (siteState, error) {
	var out siteState
	if f.state != "" && !needSite {
		out.State = f.state
		return out, nil
	}
	sitePath := f.site.name()
	res, diags := f.vars.load(sitePath)
	writeDiags(a.stderr, res.Files, diags)
	if diags.HasErrors() {
		if _, err := os.Stat(sitePath); errors.Is(err, os.ErrNotExist) {
			return out, usageError("site file %s not found: name it with --site FILE, or the store with --state URL", sitePath)
		}
		return out, silentExit(exitFailed)
	}
	out.Name = res.Site.Name
	out.State = site.ResolveState(res.Site.Settings.State, filepath.Dir(sitePath))
	if f.state != "" {
		out.State = f.state
	}
	return out, nil
}

// openState opens the store at url, explaining the usual failure: a
// running `metal serve` holds an embedded store's file.
func openState(ctx context.Context, a *app, url string) (inventory.Store, error) {
	s, err := backend.Open(ctx, url, backend.Options{Logger: a.logger()})
	if errors.Is(err, bolt.ErrLocked) {
		return nil, fmt.Errorf("%w\n"+
			"A running `metal serve` holds the embedded store while it runs. Stop it, then run this\n"+
			"again; or keep the site's state in etcd (state = \"etcd://HOST:2379/PREFIX\"), which\n"+
			"metal serve and these verbs can use at once", err)
	}
	return s, err
}

// inventoryReader is what the read verbs (machines, events) need. The
// store implements it today; a client of the daemon's JSON API can slot in
// so the verbs work while `metal serve` holds the store.
type inventoryReader interface {
	// Machines returns every machine, sorted by name.
	Machines(ctx context.Context) ([]inventory.Machine, error)
	// Machine returns the machine called ref, or whose MAC is ref.
	Machine(ctx context.Context, ref string) (inventory.Machine, error)
	// Leases returns the DHCP leases (nil when the source has none).
	Leases(ctx context.Context) ([]inventory.Lease, error)
	// Events returns events in Seq order, as inventory.Store.Events.
	Events(ctx context.Context, q inventory.EventQuery) ([]inventory.Event, error)
	// Follow calls fn with each event matching q after q.AfterSeq, the
	// ones already logged first, then each as it is appended, until ctx
	// ends (nil) or fn fails.
	Follow(ctx context.Context, q inventory.EventQuery, fn func(inventory.Event) error) error
	Close() error
}

// storeReader is an inventoryReader over an open store.
type storeReader struct{ s inventory.Store }

func (r storeReader) Close() error { return r.s.Close() }

func (r storeReader) Machines(ctx context.Context) ([]inventory.Machine, error) {
	ms, _, err := r.s.Machines(ctx)
	return ms, err
}

func (r storeReader) Machine(ctx context.Context, ref string) (inventory.Machine, error) {
	m, err := r.s.Machine(ctx, ref)
	if errors.Is(err, inventory.ErrNotFound) || errors.Is(err, inventory.ErrInvalid) {
		if mac, merr := inventory.NormalizeMAC(ref); merr == nil {
			return r.s.MachineByMAC(ctx, mac)
		}
	}
	return m, err
}

func (r storeReader) Leases(ctx context.Context) ([]inventory.Lease, error) {
	ls, _, err := r.s.Leases(ctx)
	return ls, err
}

func (r storeReader) Events(ctx context.Context, q inventory.EventQuery) ([]inventory.Event, error) {
	return r.s.Events(ctx, q)
}

// Follow is inventory.Follow over the store.
func (r storeReader) Follow(ctx context.Context, q inventory.EventQuery, fn func(inventory.Event) error) error {
	return inventory.Follow(ctx, r.s, q, fn)
}

// localAPI returns a reader over the API of the daemon serving the
// embedded store at stateURL (its socket, daemon.LocalSocket, beside the
// store's file), if one answers there.
func localAPI(stateURL string) (*apiclient.Client, bool) {
	path, ok := strings.CutPrefix(stateURL, "file://")
	if !ok {
		return nil, false
	}
	sock := filepath.Join(filepath.Dir(path), daemon.LocalSocket)
	if _, err := os.Stat(sock); err != nil {
		return nil, false
	}
	return apiclient.New(sock), true
}

// openReader opens the reader the read verbs use.
func openReader(ctx context.Context, a *app, f *stateFlags) (inventoryReader, error) {
	st, err := f.resolve(a, false)
	if err != nil {
		return nil, err
	}
	s, err := openState(ctx, a, st.State)
	if errors.Is(err, bolt.ErrLocked) {
		// metal serve holds the store: ask it instead.
		if r, ok := localAPI(st.State); ok {
			return r, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return storeReader{s: s}, nil
}

type machinesFlags struct {
	state  stateFlags
	asJSON bool
}

func newMachinesCmd(a *app) *cobra.Command {
	f := &machinesFlags{}
	cmd := &cobra.Command{
		Use:   "machines",
		Short: "List the site's machines: address, lifecycle state, power, since when",
		Long: `Machines lists every machine in the site's state store, sorted by name: the
ones the site declares and the ones the discovery agent found. STATE is where
the machine is in its life (unknown, discovered, ready, provisioning,
provisioned, failed, deprovisioning) and SINCE how long it has been there;
POWER is what its BMC last reported. IP is the declared address, or the one
leased from the pool.

The store is the one the site file's state setting names (relative file://
paths are relative to the site file), or --state. An embedded store (file://)
is held by a running ` + "`metal serve`" + `; then the verb asks that daemon instead,
over the socket in its state directory.`,
		Example: `  metal machines --site site.hcl
  metal machines --site site.hcl --json | jq -r '.machines[] | select(.state=="failed") | .name'
  metal machines --state file:///var/lib/metal/ams1.db
  metal machines show --site site.hcl web-01
  metal machines show --site site.hcl 52:54:00:00:01:01`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := openReader(cmd.Context(), a, &f.state)
			if err != nil {
				return err
			}
			defer r.Close()
			return listMachines(cmd.Context(), a.stdout, r, f.asJSON, termWidth(a.stdout))
		},
	}
	f.state.register(cmd, true)
	cmd.PersistentFlags().BoolVar(&f.asJSON, "json", false, "print JSON for scripts")
	cmd.AddCommand(&cobra.Command{
		Use:   "show NAME|MAC",
		Short: "Show one machine: identity, hardware, boot intent, agent, history, recent events",
		Long: `Show prints everything the store knows of one machine: what the site
declares, the hardware facts the agent reported, what it boots next and the
agent's progress, every lifecycle transition with its cause, and its last
events. A machine the agent discovered but the site does not declare comes
with a machine block to paste into the site file to adopt it.`,
		Example: `  metal machines show --site site.hcl web-01
  metal machines show --site site.hcl 52:54:00:00:01:01 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := openReader(cmd.Context(), a, &f.state)
			if err != nil {
				return err
			}
			defer r.Close()
			return showMachine(cmd.Context(), a.stdout, r, args[0], f.asJSON)
		},
	})
	return cmd
}

// termWidth is the width of w if it is a terminal, else 0 (no limit).
func termWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil {
			return cols
		}
	}
	return 0
}

// machineList is the --json form of `metal machines`, the same shape as
// the daemon API's GET /api/v1/machines.
type machineList struct {
	Machines []inventory.Machine `json:"machines"`
}

func listMachines(ctx context.Context, w io.Writer, r inventoryReader, asJSON bool, width int) error {
	ms, err := r.Machines(ctx)
	if err != nil {
		return err
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	if asJSON {
		if ms == nil {
			ms = []inventory.Machine{}
		}
		return writeJSON(w, machineList{Machines: ms})
	}
	leased := map[string]netip.Addr{}
	leases, err := r.Leases(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, l := range leases {
		if !l.Expired(now) {
			leased[l.MAC] = l.IP
		}
	}
	rows := [][]string{{"NAME", "MAC", "IP", "STATE", "POWER", "SINCE"}}
	for _, m := range ms {
		ip := m.Identity.IP
		if !ip.IsValid() {
			ip = leased[m.MAC]
		}
		rows = append(rows, []string{m.Name, m.MAC, addrOrDash(ip), string(orUnknown(m.State)), powerText(m.Power), age(m.Since(), now)})
	}
	writeTable(w, rows, width)
	if len(ms) == 0 {
		fmt.Fprintln(w, "No machines in the store yet: `metal serve` records the site's machines, and the discovery agent reports unknown ones.")
	}
	return nil
}

func addrOrDash(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}

func orUnknown(s inventory.State) inventory.State {
	if s == "" {
		return inventory.StateUnknown
	}
	return s
}

func powerText(p inventory.PowerState) string {
	if p == inventory.PowerUnknown {
		return "?"
	}
	return string(p)
}

// age is how long ago t was, short ("45s", "12m", "3h", "4d"); "-" for never.
func age(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(0, int(d.Seconds())))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// writeTable prints rows in aligned columns. With width > 0 the table is
// kept within it: the first column (names, the only free-length one) is
// cut with "…" as far as needed, never below 8 characters.
func writeTable(w io.Writer, rows [][]string, width int) {
	if len(rows) == 0 {
		return
	}
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	if width > 0 {
		total := 2 * (len(widths) - 1)
		for _, n := range widths {
			total += n
		}
		if over := total - width; over > 0 {
			widths[0] = max(8, widths[0]-over)
		}
	}
	var b strings.Builder
	for _, r := range rows {
		b.Reset()
		for i, c := range r {
			if n := utf8.RuneCountInString(c); n > widths[i] {
				c = string([]rune(c)[:widths[i]-1]) + "…"
			}
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+2))
			}
		}
		fmt.Fprintln(w, b.String())
	}
}

// machineDetail is the --json form of `metal machines show`.
type machineDetail struct {
	Machine inventory.Machine `json:"machine"`
	Lease   *inventory.Lease  `json:"lease,omitempty"`
	Events  []inventory.Event `json:"events"`
	// Adopt is the machine block that declares a discovered machine.
	Adopt string `json:"adopt_hcl,omitempty"`
}

// showEvents is how many of a machine's last events `show` prints.
const showEvents = 20

func showMachine(ctx context.Context, w io.Writer, r inventoryReader, ref string, asJSON bool) error {
	m, err := r.Machine(ctx, ref)
	if errors.Is(err, inventory.ErrNotFound) {
		return fmt.Errorf("no machine called %q or with that MAC in the store: `metal machines` lists them", ref)
	}
	if err != nil {
		return err
	}
	d := machineDetail{Machine: m}
	leases, err := r.Leases(ctx)
	if err != nil {
		return err
	}
	for _, l := range leases {
		if l.MAC == m.MAC {
			d.Lease = &l
		}
	}
	evs, err := r.Events(ctx, inventory.EventQuery{Machine: m.Name, MAC: m.MAC})
	if err != nil {
		return err
	}
	if len(evs) > showEvents {
		evs = evs[len(evs)-showEvents:]
	}
	d.Events = evs
	if d.Events == nil {
		d.Events = []inventory.Event{}
	}
	if m.State == inventory.StateDiscovered {
		d.Adopt = adoptHCL(m, d.Lease)
	}
	if asJSON {
		return writeJSON(w, d)
	}
	writeMachine(w, d, time.Now())
	return nil
}

func writeMachine(w io.Writer, d machineDetail, now time.Time) {
	m := d.Machine
	kv := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "  %-14s %s\n", k+":", v)
		}
	}
	fmt.Fprintf(w, "Machine %s\n", m.Name)
	kv("MAC", m.MAC)
	kv("State", fmt.Sprintf("%s (since %s)", orUnknown(m.State), when(m.Since(), now)))
	if m.Power != inventory.PowerUnknown {
		kv("Power", fmt.Sprintf("%s (seen %s)", m.Power, when(m.PowerAt, now)))
	}
	id := m.Identity
	if id.IP.IsValid() {
		kv("IP", id.IP.String())
	}
	if d.Lease != nil {
		state := "until " + d.Lease.Expiry.Local().Format(time.DateTime)
		if d.Lease.Expired(now) {
			state = "expired " + d.Lease.Expiry.Local().Format(time.DateTime)
		}
		kv("Lease", fmt.Sprintf("%s %s", d.Lease.IP, state))
	}
	kv("Network", id.Network)
	kv("Hostname", id.Hostname)
	kv("Image", id.Image)
	kv("BMC", id.BMCAddress)
	kv("Serial", id.Serial)
	if len(id.Labels) > 0 {
		kv("Labels", labelsText(id.Labels))
	}

	if hw := m.Hardware; hw != nil {
		fmt.Fprintf(w, "\nHardware (reported %s)\n", when(hw.ReportedAt, now))
		if hw.CPU.Model != "" || hw.CPU.Cores > 0 {
			kv("CPU", fmt.Sprintf("%s, %d sockets, %d cores, %d threads", orDash(hw.CPU.Model), hw.CPU.Sockets, hw.CPU.Cores, hw.CPU.Threads))
		}
		if hw.MemoryBytes > 0 {
			kv("Memory", bytesText(hw.MemoryBytes))
		}
		for _, dk := range hw.Disks {
			kind := "ssd"
			if dk.Rotational {
				kind = "hdd"
			}
			kv("Disk "+dk.Name, strings.TrimSpace(fmt.Sprintf("%s %s %s %s", bytesText(dk.SizeBytes), kind, dk.Model, dk.Serial)))
		}
		for _, n := range hw.NICs {
			speed := ""
			if n.SpeedMbps > 0 {
				speed = fmt.Sprintf(" %d Mb/s", n.SpeedMbps)
			}
			kv("NIC "+n.Name, strings.TrimSpace(fmt.Sprintf("%s%s %s", n.MAC, speed, n.Driver)))
		}
		if dmi := hw.DMI; dmi != (inventory.DMI{}) {
			kv("System", strings.Join(nonEmpty(dmi.Vendor, dmi.Product, "serial "+dmi.Serial, "BIOS "+dmi.BIOSVersion), ", "))
		}
	}

	in := m.Intent
	fmt.Fprintf(w, "\nBoot intent\n")
	kv("Action", string(orNone(in.Action)))
	kv("Kernel", in.Kernel)
	kv("Initrds", strings.Join(in.Initrds, " "))
	kv("Cmdline", in.Cmdline)
	if t := in.Task; t != nil {
		task := fmt.Sprintf("%s (task %s)", t.Kind, t.ID)
		if t.Image != "" {
			task += fmt.Sprintf(": image %s to %s", t.Image, orDefault(t.Disk, "the first disk"))
		}
		kv("Task", task)
	}
	if ag := m.Agent; ag != nil {
		fmt.Fprintf(w, "\nAgent (report %s)\n", when(ag.UpdatedAt, now))
		kv("Task", ag.TaskID)
		kv("Phase", string(ag.Phase))
		step := ag.Step
		if ag.Total > 0 {
			step += fmt.Sprintf(" %s of %s (%d%%)", bytesText(ag.Done), bytesText(ag.Total), ag.Done*100/ag.Total)
		} else if ag.Done > 0 {
			step += " " + bytesText(ag.Done)
		}
		kv("Step", step)
		kv("Error", ag.Error)
	}

	if len(m.History) > 0 {
		fmt.Fprintf(w, "\nHistory\n")
		for _, t := range m.History {
			fmt.Fprintf(w, "  %s  %s → %s  %s\n", t.At.Local().Format(time.DateTime), t.From, t.To, t.Cause)
		}
	}
	fmt.Fprintf(w, "\nLast events\n")
	if len(d.Events) == 0 {
		fmt.Fprintln(w, "  (none)")
	}
	for _, e := range d.Events {
		fmt.Fprintf(w, "  %s\n", eventLine(e))
	}
	if d.Adopt != "" {
		fmt.Fprintf(w, "\nThis machine was discovered, not declared. To adopt it, add to the site file\n(pick its name, address and image), then run `metal apply`:\n\n%s", d.Adopt)
	}
}

// adoptHCL is a machine block declaring a discovered machine.
func adoptHCL(m inventory.Machine, lease *inventory.Lease) string {
	var b strings.Builder
	fmt.Fprintf(&b, "machine %q {\n", m.Name)
	fmt.Fprintf(&b, "  mac   = %q\n", m.MAC)
	if lease != nil {
		fmt.Fprintf(&b, "  # ip  = \"...\" # an address outside the pool; it leases %s from the pool now\n", lease.IP)
	} else {
		fmt.Fprintf(&b, "  # ip  = \"...\" # an address outside the pool, or none to lease one from it\n")
	}
	b.WriteString("  image = image.NAME\n")
	if hw := m.Hardware; hw != nil {
		if d, ok := installDisk(hw.Disks); ok {
			fmt.Fprintf(&b, "  disk  = %q # %s %s\n", "/dev/"+d.Name, bytesText(d.SizeBytes), strings.TrimSpace(d.Model))
		}
		var facts []string
		if hw.CPU.Model != "" {
			facts = append(facts, hw.CPU.Model)
		}
		if hw.MemoryBytes > 0 {
			facts = append(facts, bytesText(hw.MemoryBytes)+" memory")
		}
		if hw.DMI.Vendor != "" || hw.DMI.Product != "" {
			facts = append(facts, strings.TrimSpace(hw.DMI.Vendor+" "+hw.DMI.Product))
		}
		if len(facts) > 0 {
			fmt.Fprintf(&b, "  # %s\n", strings.Join(facts, ", "))
		}
		if hw.DMI.Serial != "" {
			fmt.Fprintf(&b, "  labels = { serial = %q }\n", hw.DMI.Serial)
		}
	}
	b.WriteString("}\n")
	return b.String()
}

// installDisk suggests the disk to install on: the smallest non-rotational
// one (a boot SSD beside data disks), else the smallest.
func installDisk(disks []inventory.Disk) (inventory.Disk, bool) {
	var best inventory.Disk
	found := false
	for _, d := range disks {
		better := !found || (!d.Rotational && best.Rotational) ||
			(d.Rotational == best.Rotational && d.SizeBytes < best.SizeBytes)
		if better {
			best, found = d, true
		}
	}
	return best, found
}

func when(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("%s, %s ago", t.Local().Format(time.DateTime), age(t, now))
}

func labelsText(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + l[k]
	}
	return strings.Join(keys, " ")
}

// bytesText is a size as people read it, as the console shows it too.
func bytesText(n uint64) string { return humanize.Bytes(n) }

func nonEmpty(parts ...string) []string {
	var out []string
	for _, p := range parts {
		if p != "" && p != "serial " && p != "BIOS " {
			out = append(out, p)
		}
	}
	return out
}

func orDash(s string) string { return orDefault(s, "-") }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orNone(a inventory.BootAction) inventory.BootAction {
	if a == "" {
		return inventory.BootNone
	}
	return a
}
