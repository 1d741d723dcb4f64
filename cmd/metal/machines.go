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

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/metal-dev/metal/daemon"
	apiclient "github.com/metal-dev/metal/daemon/api/client"
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
	view.Diags(a.stderr, res.Files, diags)
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
		return view.JSON(w, machineList{Machines: ms})
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
	view.Machines(w, ms, leased, now, width)
	if len(ms) == 0 {
		fmt.Fprintln(w, "No machines in the store yet: `metal serve` records the site's machines, and the discovery agent reports unknown ones.")
	}
	return nil
}

// showEvents is how many of a machine's last events `show` prints.
const showEvents = 20

func showMachine(ctx context.Context, w io.Writer, r inventoryReader, ref string, asJSON bool) error {
	m, err := r.Machine(ctx, ref)
	removed := false
	if errors.Is(err, inventory.ErrNotFound) {
		// A deprovisioned machine is gone from the store, but its events
		// (its erase records first of all) are not.
		evs, eerr := r.Events(ctx, inventory.EventQuery{Machine: ref})
		if eerr != nil || len(evs) == 0 {
			return fmt.Errorf("no machine called %q or with that MAC in the store: `metal machines` lists them", ref)
		}
		m, removed, err = inventory.Machine{Name: ref}, true, nil
	}
	if err != nil {
		return err
	}
	d := view.MachineDetail{Machine: m, Removed: removed}
	leases, err := r.Leases(ctx)
	if err != nil {
		return err
	}
	for _, l := range leases {
		if l.MAC == m.MAC && !removed {
			d.Lease = &l
		}
	}
	evs, err := r.Events(ctx, inventory.EventQuery{Machine: m.Name, MAC: m.MAC})
	if err != nil {
		return err
	}
	for _, e := range evs {
		if e.Kind == inventory.EventErase && e.Erase != nil {
			d.Erasures = append(d.Erasures, e)
		}
	}
	if len(evs) > showEvents {
		evs = evs[len(evs)-showEvents:]
	}
	d.Events = evs
	if d.Events == nil {
		d.Events = []inventory.Event{}
	}
	if m.State == inventory.StateDiscovered {
		d.Adopt = view.AdoptHCL(m, d.Lease)
	}
	if asJSON {
		return view.JSON(w, d)
	}
	view.Machine(w, d, time.Now())
	return nil
}
