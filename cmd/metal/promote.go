package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/bmc"
	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backup"
	"github.com/metal-dev/metal/site"
)

type promoteFlags struct {
	state  stateFlags
	ssh    sshFlags
	from   string
	owner  string
	force  bool
	margin time.Duration
	// acceptUnfenced serves even when the fence device does not confirm
	// the old primary's host off; fenceTimeout bounds that confirmation.
	acceptUnfenced bool
	fenceTimeout   time.Duration
}

func newPromoteCmd(a *app) *cobra.Command {
	f := &promoteFlags{}
	cmd := &cobra.Command{
		Use:   "promote --site FILE --from sftp://USER@HOST/PATH [--force]",
		Short: "Make this standby the active site, fencing the old primary",
		Long:  helpText("promote"),
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
			powerOff, fenceDev, err := fenceDevice(a, st.Site, f.fenceTimeout)
			if err != nil {
				return err
			}
			dir := site.DefaultStateDir(st.State, filepath.Dir(f.state.site.name()))
			unfenced := backup.UnfencedClaim(dir, st.Name)
			switch {
			case powerOff != nil:
				fmt.Fprintf(a.stdout, "Claiming site %s; once claimed, powering the old primary's host off through its BMC (%s).\n", st.Name, fenceDev)
			case !f.force:
				fmt.Fprintf(a.stdout, "Claiming site %s; once claimed, waiting out the lease of a primary heard from meanwhile (plus a margin of %v for clock skew).\n", st.Name, f.margin)
			}
			p, err := backup.Promote(ctx, r, backup.PromoteOptions{Site: st.Name, Owner: f.owner, Force: f.force, Margin: f.margin,
				PowerOff: powerOff, FenceRequired: !f.acceptUnfenced, Refence: unfenced > 0})
			var ue *backup.UnfencedError
			if errors.As(err, &ue) {
				if merr := backup.SetUnfencedMark(dir, st.Name, ue.Claim, err); merr != nil {
					return fmt.Errorf("%w; and leaving the mark that stops this instance from serving: %w", err, merr)
				}
				return &exitError{code: exitFailed, err: fmt.Errorf("promote %s: %w\n"+
					"This instance will not serve (metal serve, apply and the power verbs refuse here) while the old primary's host may still run. "+
					"The old primary stops by itself once it reads the claim or its lease ends; until then, or until a promote here confirms the fence, "+
					"no instance may be serving the site. Check the fence BMC (%s) and that the host is off, then run metal promote here again "+
					"(it powers the host off again), or with --accept-unfenced to serve without the confirmation", st.Name, err, fenceDev)}
			}
			if err != nil {
				return err
			}
			// This instance owns the site now: verbs may change machines here.
			if err := backup.ClearMark(dir, st.Name); err != nil {
				return err
			}
			if p.Already && !p.PoweredOff && p.PowerOffErr == nil {
				fmt.Fprintf(a.stdout, "Site %s is already active here (%s, claim %d of %s).\n", st.Name, p.Fence.Owner, p.Fence.Epoch, p.Fence.Time.Local().Format(time.DateTime))
				return nil
			}
			fmt.Fprintf(a.stdout, "Site %s promoted: %s is now its active instance (claim %d, %d records in its store).\n", st.Name, p.Fence.Owner, p.Fence.Epoch, info.Records)
			hb := p.Heartbeat
			switch {
			case p.PoweredOff:
				fmt.Fprintf(a.stdout, "The old primary's host was powered off through its BMC (%s), which confirms it is off: it serves nothing, whatever it saw of the claim.\n", fenceDev)
				return nil
			case p.PowerOffErr != nil:
				fmt.Fprintf(a.stdout, "The fence device (BMC %s) did not confirm the old primary's host off: %v\n", fenceDev, p.PowerOffErr)
			case powerOff == nil:
				fmt.Fprintf(a.stdout, "No fence block in the site file: metal did not power the old primary's host off. It relies on the primary stopping itself "+
					"when its lease ends, which needs its clock and timers to work. A fence block naming that host's BMC makes promote power it off and confirm.\n")
			}
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
	cmd.Flags().BoolVar(&f.acceptUnfenced, "accept-unfenced", false,
		"serve even if the fence block's BMC does not confirm the old primary's host off (metal then relies on the primary's lease, as without a fence block)")
	cmd.Flags().DurationVar(&f.fenceTimeout, "fence-timeout", 2*time.Minute, "how long the fence block's BMC may take to power the old primary's host off and confirm it")
	return cmd
}

// fenceDevice is the power-off of the site's fence block (nil without
// one), bounded by timeout, and the BMC's address to name it. Half the
// bound goes to waiting for the power state, so a BMC that keeps
// reporting the host on is named as such before the bound cuts it off.
func fenceDevice(a *app, s *site.Site, timeout time.Duration) (func(context.Context) error, string, error) {
	if s == nil || s.Fence == nil {
		return nil, "", nil
	}
	if timeout <= 0 {
		return nil, "", usageError("--fence-timeout %v: want a positive duration", timeout)
	}
	cfg := apply.BMCConfigOf("fence", s.Fence.BMC)
	cfg.PowerWait = timeout / 2
	cfg.Timeout = min(bmc.DefaultTimeout, timeout/4)
	d, err := bmc.New(cfg, a.logger())
	if err != nil {
		return nil, "", fmt.Errorf("fence block: %w", err)
	}
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := bmc.Fence(ctx, d); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("no confirmation within --fence-timeout %v: %w", timeout, err)
			}
			return err
		}
		return nil
	}, s.Fence.BMC.Address, nil
}
