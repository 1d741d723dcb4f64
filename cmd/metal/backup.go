package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backup"
)

// sshFlags say how the backup verbs reach the SFTP server.
type sshFlags struct {
	knownHosts string
	identities []string
	timeout    time.Duration
}

func (f *sshFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.knownHosts, "known-hosts", "", "known_hosts file checked for the server's host key (default ~/.ssh/known_hosts); an unknown or changed key is refused")
	cmd.Flags().StringArrayVarP(&f.identities, "identity", "i", nil, "private key file to offer (repeatable; default the ssh-agent and ~/.ssh/id_*)")
	cmd.Flags().DurationVar(&f.timeout, "ssh-timeout", 15*time.Second, "bound on connecting to the SFTP server")
}

// dial connects to the directory of raw (sftp://user@host[:port]/path).
func (f *sshFlags) dial(ctx context.Context, a *app, raw string) (*backup.Remote, error) {
	t, err := backup.ParseTarget(raw)
	if err != nil {
		return nil, usageError("%v", err)
	}
	return backup.Dial(ctx, t, backup.SSHOptions{KnownHosts: f.knownHosts, KeyFiles: f.identities, Timeout: f.timeout, Logger: a.logger()})
}

// openSiteState resolves the site (its name names the snapshots) and opens
// its store.
func openSiteState(ctx context.Context, a *app, f *stateFlags) (siteState, inventory.Store, error) {
	st, err := f.resolve(a, true)
	if err != nil {
		return st, nil, err
	}
	s, err := openState(ctx, a, st.State)
	return st, s, err
}

type backupFlags struct {
	state  stateFlags
	ssh    sshFlags
	to     string
	keep   int
	asJSON bool
}

func newBackupCmd(a *app) *cobra.Command {
	f := &backupFlags{}
	cmd := &cobra.Command{
		Use:   "backup --site FILE --to sftp://USER@HOST[:PORT]/PATH",
		Short: "Write a snapshot of the site's state store to an SFTP server",
		Long: `Backup writes one consistent snapshot of the site's state store (machines,
leases, events, apply runs) to a directory on an SFTP server. The file is
named metal-<site>-<time>-<revision>.snap, carries a checksum, and appears
only once it is complete (uploaded under a temporary name, then renamed).
With --keep N the site's older snapshots beyond the newest N are deleted.

SSH works as ssh(1) does: keys from the ssh-agent or ~/.ssh/id_*, and the
server's host key must be in known_hosts (add it with ssh-keyscan after
checking it); an unknown or changed host key is refused.

PATH is relative to the user's home directory; start it with a second slash
for an absolute one (sftp://metal@backup//srv/metal).`,
		Example: `  metal backup --site site.hcl --to sftp://metal@backup.example/ams1 --keep 48
  metal backup --site site.hcl --to sftp://metal@10.0.0.9:2222//srv/metal -i ~/.ssh/metal_backup
  # every hour, from cron:
  0 * * * *  metal backup --site /etc/metal/site.hcl --to sftp://metal@backup/ams1 --keep 72`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.to == "" {
				return usageError("--to: name the SFTP directory, like sftp://metal@backup.example/ams1")
			}
			if f.keep < 0 {
				return usageError("--keep %d: want 0 (keep all) or more", f.keep)
			}
			ctx := cmd.Context()
			st, store, err := openSiteState(ctx, a, &f.state)
			if err != nil {
				return err
			}
			defer store.Close()
			r, err := f.ssh.dial(ctx, a, f.to)
			if err != nil {
				return err
			}
			defer r.Close()
			res, err := backup.Backup(ctx, store, r, backup.Options{Site: st.Name, Keep: f.keep})
			if err != nil {
				return err
			}
			if f.asJSON {
				return writeJSON(a.stdout, res)
			}
			fmt.Fprintf(a.stdout, "Snapshot %s written to %s: %d records at revision %d, %s.\n",
				res.Name, r.Target(), res.Header.Records, res.Header.Revision, bytesText(uint64(res.Size)))
			if len(res.Deleted) > 0 {
				fmt.Fprintf(a.stdout, "Deleted %d older: %s\n", len(res.Deleted), strings.Join(res.Deleted, ", "))
			}
			return nil
		},
	}
	f.state.register(cmd, false)
	f.ssh.register(cmd)
	cmd.Flags().StringVar(&f.to, "to", "", "the SFTP directory: sftp://USER@HOST[:PORT]/PATH")
	cmd.Flags().IntVar(&f.keep, "keep", 0, "keep the newest N snapshots of the site, delete older ones (0: keep all)")
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print the result as JSON")
	return cmd
}

// splitSnapshot splits sftp://…/DIR/NAME into the directory and the
// snapshot name: NAME is a snapshot file name, or "latest" (returned as
// ""). A URL ending in a directory means its latest snapshot.
func splitSnapshot(raw string) (dir, name string) {
	trimmed := strings.TrimRight(raw, "/")
	base := path.Base(trimmed)
	if base == "latest" {
		return strings.TrimSuffix(trimmed, "/latest"), ""
	}
	if _, ok := backup.ParseName(base); ok {
		return strings.TrimSuffix(trimmed, "/"+base), base
	}
	return raw, ""
}

type restoreFlags struct {
	state   stateFlags
	ssh     sshFlags
	from    string
	replace bool
}

func newRestoreCmd(a *app) *cobra.Command {
	f := &restoreFlags{}
	cmd := &cobra.Command{
		Use:   "restore --site FILE --from sftp://USER@HOST/PATH/SNAPSHOT|latest",
		Short: "Load a snapshot from an SFTP server into the site's state store",
		Long: `Restore downloads a snapshot written by ` + "`metal backup`" + `, checks its checksum and
that it is of this site, and loads it into the site's state store. Name a
snapshot file, or end the URL in "latest" (or the directory) for the newest.

The store must be new and empty (a fresh file://, an unused etcd prefix), so
a restore never mixes two states; --replace drops what the store holds
first. Stop ` + "`metal serve`" + ` before restoring: it holds an embedded store.
A snapshot from an older metal is migrated; one from a newer metal is
refused (upgrade this binary).`,
		Example: `  metal restore --site site.hcl --from sftp://metal@backup.example/ams1/latest
  metal restore --site site.hcl --from sftp://metal@backup.example/ams1/metal-ams1-20300102T030405Z-000000000042.snap
  metal restore --site site.hcl --state file:///var/lib/metal/new.db --from sftp://metal@backup.example/ams1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.from == "" {
				return usageError("--from: name the snapshot, like sftp://metal@backup.example/ams1/latest")
			}
			ctx := cmd.Context()
			st, store, err := openSiteState(ctx, a, &f.state)
			if err != nil {
				return err
			}
			defer store.Close()
			dir, name := splitSnapshot(f.from)
			r, err := f.ssh.dial(ctx, a, dir)
			if err != nil {
				return err
			}
			defer r.Close()
			h, err := restore(ctx, r, st.Name, name, store, f.replace)
			if errors.Is(err, inventory.ErrNotEmpty) {
				return fmt.Errorf("%w\nThe store %s already holds state. Restore into a new one (--state URL), or drop what it holds with --replace", err, st.State)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Restored snapshot of site %s taken %s (revision %d, %d records) into %s.\n",
				h.Site, h.Created.Local().Format(time.DateTime), h.Revision, h.Records, st.State)
			return nil
		},
	}
	f.state.register(cmd, false)
	f.ssh.register(cmd)
	cmd.Flags().StringVar(&f.from, "from", "", "the snapshot: sftp://USER@HOST[:PORT]/PATH/NAME, or .../latest")
	cmd.Flags().BoolVar(&f.replace, "replace", false, "drop what the store holds before loading the snapshot")
	return cmd
}

// restore loads snapshot name (the latest if empty) of site into store.
func restore(ctx context.Context, r *backup.Remote, site, name string, store inventory.Store, replace bool) (backup.Header, error) {
	if !replace {
		return backup.Restore(ctx, r, site, name, store)
	}
	if name == "" {
		latest, err := backup.Latest(ctx, r, site)
		if err != nil {
			return backup.Header{}, err
		}
		name = latest.Name
	}
	h, recs, err := backup.Fetch(ctx, r, name)
	if err != nil {
		return backup.Header{}, err
	}
	if h.Site != site {
		return backup.Header{}, fmt.Errorf("snapshot %s is of site %s, not %s", name, h.Site, site)
	}
	if err := store.Restore(ctx, recs, inventory.RestoreOptions{Replace: true}); err != nil {
		return backup.Header{}, fmt.Errorf("restore %s: %w", name, err)
	}
	return h, nil
}

type standbyFlags struct {
	state stateFlags
	ssh   sshFlags
	from  string
	every time.Duration
	once  bool
}

func newStandbyCmd(a *app) *cobra.Command {
	f := &standbyFlags{}
	cmd := &cobra.Command{
		Use:   "standby --site FILE --from sftp://USER@HOST/PATH --every 5m",
		Short: "Keep this site's state store a replica of the primary's newest snapshot",
		Long: `Standby runs on a disaster-recovery site: every --every it looks for a newer
snapshot of the site in the SFTP directory the primary backs up to, and
replaces the local state store with it in one step. A failed pull is logged
and retried; the replica keeps the last good snapshot meanwhile. It runs
until interrupted (--once: one pull, then exit).

When the primary is lost, stop standby and run ` + "`metal promote`" + `, then
` + "`metal serve`" + ` on this site.`,
		Example: `  metal standby --site dr.hcl --from sftp://metal@backup.example/ams1 --every 5m
  metal standby --site dr.hcl --from sftp://metal@backup.example/ams1 --once`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.from == "" {
				return usageError("--from: name the primary's SFTP directory, like sftp://metal@backup.example/ams1")
			}
			if f.every < time.Second {
				return usageError("--every %v: want at least 1s", f.every)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			st, store, err := openSiteState(ctx, a, &f.state)
			if err != nil {
				return err
			}
			defer store.Close()
			r, err := f.ssh.dial(ctx, a, f.from)
			if err != nil {
				return err
			}
			defer r.Close()
			rep := &backup.Replicator{Remote: r, Site: st.Name, Replica: store, Interval: f.every, Logger: a.logger()}
			return runStandby(ctx, a.stdout, rep, f.every, f.once)
		},
	}
	f.state.register(cmd, false)
	f.ssh.register(cmd)
	cmd.Flags().StringVar(&f.from, "from", "", "the primary's SFTP directory: sftp://USER@HOST[:PORT]/PATH")
	cmd.Flags().DurationVar(&f.every, "every", 5*time.Minute, "how often to look for a newer snapshot")
	cmd.Flags().BoolVar(&f.once, "once", false, "pull the newest snapshot once, then exit")
	return cmd
}

// runStandby syncs now and then every interval, saying what changed. With
// once, a failed pull is the command's failure; else it is retried.
func runStandby(ctx context.Context, w io.Writer, rep *backup.Replicator, every time.Duration, once bool) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		name, changed, err := rep.Sync(ctx)
		switch {
		case err != nil && once:
			return err
		case err != nil && ctx.Err() == nil:
			rep.Logger.Warn("replica sync failed; keeping the last good snapshot", "err", err)
		case changed:
			fmt.Fprintf(w, "%s  replica now holds %s\n", time.Now().Format(time.DateTime), name)
		case once:
			fmt.Fprintf(w, "replica already holds %s\n", name)
		}
		if once {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type promoteFlags struct {
	state  stateFlags
	ssh    sshFlags
	from   string
	owner  string
	force  bool
	margin time.Duration
}

func newPromoteCmd(a *app) *cobra.Command {
	f := &promoteFlags{}
	cmd := &cobra.Command{
		Use:   "promote --site FILE --from sftp://USER@HOST/PATH [--force]",
		Short: "Make this standby the active site, fencing the old primary",
		Long: `Promote makes this standby the site's active instance, so that the old
primary and this one never serve at the same time:

  - The primary holds a lease of L (3 of its --backup-every intervals): it
    stops serving once it could not confirm a heartbeat for L, on a timer of
    its own, whatever its link to the SFTP server does.
  - Promote refuses until the newest heartbeat is older than L plus
    --margin (M, for clock skew); then it claims the site with a fence file
    that only one promote can create (a concurrent one is refused and told
    who won), reads the heartbeat again and waits out the lease of one
    written meanwhile. When it returns, the old primary has stopped, as long
    as the hosts' clocks differ by less than M.

--force claims at once without waiting, for a primary known to be off:
metal cannot then guarantee that it stopped, and says so. A primary that
comes back sees the claim and refuses to serve. This standby's store must
hold a replica (from ` + "`metal standby`" + ` or ` + "`metal restore`" + `): stop
` + "`metal standby`" + ` first, then promote, then run ` + "`metal serve`" + ` here
with --owner's name as its owner.`,
		Example: `  metal promote --site dr.hcl --from sftp://metal@backup.example/ams1
  metal promote --site dr.hcl --from sftp://metal@backup.example/ams1 --force --owner ams1-dr`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.from == "" {
				return usageError("--from: name the site's SFTP directory, like sftp://metal@backup.example/ams1")
			}
			ctx := cmd.Context()
			st, store, err := openSiteState(ctx, a, &f.state)
			if err != nil {
				return err
			}
			info, err := store.Dump(ctx, func(inventory.Record) error { return nil })
			store.Close()
			if err != nil {
				return err
			}
			// The schema version alone: nothing was ever replicated here.
			if info.Records <= 1 && !f.force {
				return fmt.Errorf("the state store %s is empty: this standby holds no replica to serve from. "+
					"Run `metal standby --once` or `metal restore` first (or --force to start empty)", st.State)
			}
			r, err := f.ssh.dial(ctx, a, f.from)
			if err != nil {
				return err
			}
			defer r.Close()
			if !f.force {
				fmt.Fprintf(a.stdout, "Claiming site %s; once claimed, waiting out the lease of a primary heard from meanwhile (plus a margin of %v for clock skew).\n", st.Name, f.margin)
			}
			p, err := backup.Promote(ctx, r, backup.PromoteOptions{Site: st.Name, Owner: f.owner, Force: f.force, Margin: f.margin})
			if err != nil {
				return err
			}
			if p.Already {
				fmt.Fprintf(a.stdout, "Site %s is already active here (%s, claim %d of %s).\n", st.Name, p.Fence.Owner, p.Fence.Epoch, p.Fence.Time.Local().Format(time.DateTime))
				return nil
			}
			fmt.Fprintf(a.stdout, "Site %s promoted: %s is now its active instance (claim %d, %d records in its store).\n", st.Name, p.Fence.Owner, p.Fence.Epoch, info.Records)
			hb := p.Heartbeat
			switch {
			case hb.Time.IsZero():
			case f.force:
				fmt.Fprintf(a.stdout, "Forced: the primary %s on %s (pid %d, last heartbeat %s ago) may still be serving: metal cannot guarantee it stopped. "+
					"It stops once its lease (%v after its last heartbeat) ends or it sees the claim; power it off to be sure.\n",
					hb.Owner, hb.Host, hb.PID, time.Since(hb.Time).Round(time.Second), hb.LeaseLength())
			default:
				fmt.Fprintf(a.stdout, "The primary %s on %s (pid %d, last heartbeat %s ago) is fenced: its lease (%v) ended %v before this promote (margin %v).\n",
					hb.Owner, hb.Host, hb.PID, time.Since(hb.Time).Round(time.Second), hb.LeaseLength(), f.margin, f.margin)
			}
			return nil
		},
	}
	f.state.register(cmd, false)
	f.ssh.register(cmd)
	cmd.Flags().StringVar(&f.from, "from", "", "the site's SFTP directory (where the primary backs up and beats): sftp://USER@HOST[:PORT]/PATH")
	cmd.Flags().StringVar(&f.owner, "owner", "", "name of the promoted instance (default this host's name and machine-id)")
	cmd.Flags().BoolVar(&f.force, "force", false, "promote even while the primary's heartbeat is fresh, or with an empty store; no wait for its lease")
	cmd.Flags().DurationVar(&f.margin, "margin", backup.DefaultMargin, "clock-skew margin M waited beyond the primary's lease; must exceed the skew between the hosts' clocks")
	return cmd
}

// primaryFlags make `metal serve` the primary of a disaster-recovery pair:
// it ships snapshots of the store it holds and a heartbeat to an SFTP
// directory a standby reads (`metal standby`), and stops serving when a
// standby was promoted there (`metal promote` writes the fence). Only serve
// can snapshot an embedded store while it runs: it holds the file.
type primaryFlags struct {
	ssh   sshFlags
	to    string
	every time.Duration
	keep  int
	owner string
}

func (f *primaryFlags) register(cmd *cobra.Command) {
	f.ssh.register(cmd)
	cmd.Flags().StringVar(&f.to, "backup-to", "", "ship a snapshot and a heartbeat every --backup-every to this SFTP directory "+
		"(sftp://USER@HOST[:PORT]/PATH), for a standby (metal standby); stop serving once a standby is promoted there")
	cmd.Flags().DurationVar(&f.every, "backup-every", 5*time.Minute, "interval of snapshots and heartbeats; serve stops once it confirmed none for 3 intervals (its lease), and metal promote waits that long plus its --margin")
	cmd.Flags().IntVar(&f.keep, "backup-keep", 48, "keep the newest N snapshots in the SFTP directory (0: keep all)")
	cmd.Flags().StringVar(&f.owner, "owner", "", "name of this instance of the site for the fence (default this host's name and machine-id); "+
		"a promoted standby serves with the --owner it was promoted as")
}

// startPrimary connects to the backup directory and checks the fence before
// anything is served: a primary that comes back after a promotion must not
// hand out a single lease. It returns nil when no --backup-to was given.
func (f *primaryFlags) startPrimary(ctx context.Context, log *slog.Logger, siteName string) (*primaryRun, error) {
	if f.to == "" {
		return nil, nil
	}
	if f.every < time.Second {
		return nil, usageError("--backup-every %v: want at least 1s", f.every)
	}
	t, err := backup.ParseTarget(f.to)
	if err != nil {
		return nil, usageError("--backup-to: %v", err)
	}
	r, err := backup.Dial(ctx, t, backup.SSHOptions{KnownHosts: f.ssh.knownHosts, KeyFiles: f.ssh.identities, Timeout: f.ssh.timeout, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("backup directory: %w", err)
	}
	p := &backup.Primary{Remote: r, Site: siteName, Owner: f.owner, Interval: f.every, Logger: log}
	if err := p.Beat(ctx); err != nil {
		r.Close()
		if errors.Is(err, backup.ErrFenced) {
			return nil, fmt.Errorf("%w\nThis instance no longer owns the site: the promoted standby serves it. "+
				"Run metal standby here to follow it, or promote this one back (metal promote) once that one is stopped", err)
		}
		return nil, fmt.Errorf("first heartbeat: %w", err)
	}
	return &primaryRun{primary: p, keep: f.keep, log: log}, nil
}

// primaryRun is a primary's heartbeat and snapshots while serve runs.
type primaryRun struct {
	primary *backup.Primary
	keep    int
	log     *slog.Logger
}

// run beats and backs store up every interval until ctx ends (nil) or the
// site is fenced (an error wrapping backup.ErrFenced: serve must stop).
// A failed snapshot is logged and tried again next interval.
func (p *primaryRun) run(ctx context.Context, store inventory.Store) error {
	defer p.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	beats := make(chan error, 1)
	go func() { beats <- p.primary.Run(ctx) }()
	t := time.NewTicker(p.primary.Interval)
	defer t.Stop()
	var written int64 // the store revision of the last snapshot written
	for {
		res, err := backup.Backup(ctx, store, p.primary.Remote, backup.Options{Site: p.primary.Site, Keep: p.keep, Unless: written})
		switch {
		case err != nil && ctx.Err() == nil:
			p.log.Warn("snapshot to the backup directory failed; trying again next interval", "to", p.primary.Remote.Target(), "error", err)
		case err == nil && res.Unchanged:
			p.log.Debug("store unchanged; no snapshot", "revision", res.Header.Revision)
		case err == nil:
			written = res.Header.Revision
			p.primary.SetRevision(written)
			p.log.Debug("snapshot written", "name", res.Name, "revision", res.Header.Revision)
		}
		select {
		case err := <-beats:
			return err
		case <-t.C:
		}
	}
}

func (p *primaryRun) close() { p.primary.Remote.Close() }
