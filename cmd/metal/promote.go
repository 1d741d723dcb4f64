package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/cmd/metal/internal/view"
	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backup"
	"github.com/metal-dev/metal/site"
)

type promoteFlags struct {
	state  arguments.State
	ssh    arguments.SSH
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
		Use:     "promote --site FILE --from sftp://USER@HOST/PATH [--force]",
		Short:   "Make this standby the active site, fencing the old primary",
		Long:    helpText("promote"),
		Example: helpText("promote.examples"),
		Args:    cobra.NoArgs,
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
			r, err := f.ssh.Dial(ctx, a.logger(), f.from)
			if err != nil {
				return err
			}
			defer r.Close()
			v := view.Promotion{Site: st.Name, Records: info.Records, Force: f.force, Margin: f.margin}
			var powerOff func(context.Context) error
			if st.Site != nil && st.Site.Fence != nil {
				if f.fenceTimeout <= 0 {
					return usageError("--fence-timeout %v: want a positive duration", f.fenceTimeout)
				}
				if powerOff, err = apply.FencePowerOff(st.Site.Fence, f.fenceTimeout, a.logger()); err != nil {
					return err
				}
				v.Fenced, v.FenceDevice = true, st.Site.Fence.BMC.Address
			}
			v.Claiming(a.stdout)
			dir := site.DefaultStateDir(st.State, filepath.Dir(f.state.Site.Name()))
			p, err := backup.PromoteHere(ctx, r, dir, backup.PromoteOptions{Site: st.Name, Owner: f.owner, Force: f.force, Margin: f.margin,
				PowerOff: powerOff, FenceRequired: !f.acceptUnfenced})
			if _, ok := err.(*backup.UnfencedError); ok {
				return failed(fmt.Errorf("promote %s: %w\n"+
					"This instance will not serve (metal serve, apply and the power verbs refuse here) while the old primary's host may still run. "+
					"The old primary stops by itself once it reads the claim or its lease ends; until then, or until a promote here confirms the fence, "+
					"no instance may be serving the site. Check the fence BMC (%s) and that the host is off, then run metal promote here again "+
					"(it powers the host off again), or with --accept-unfenced to serve without the confirmation", st.Name, err, v.FenceDevice))
			}
			if err != nil {
				return err
			}
			v.Promoted(a.stdout, p)
			return nil
		},
	}
	f.state.Register(cmd.Flags())
	f.ssh.Register(cmd.Flags())
	cmd.Flags().StringVar(&f.from, "from", "", "the site's SFTP directory (where the primary backs up and beats): sftp://USER@HOST[:PORT]/PATH")
	cmd.Flags().StringVar(&f.owner, "owner", "", "name of the promoted instance (default this host's name and machine-id)")
	cmd.Flags().BoolVar(&f.force, "force", false, "promote even while the primary's heartbeat is fresh, or with an empty store; no wait for its lease")
	cmd.Flags().DurationVar(&f.margin, "margin", backup.DefaultMargin, "clock-skew margin M waited beyond the primary's lease; must exceed the skew between the hosts' clocks")
	cmd.Flags().BoolVar(&f.acceptUnfenced, "accept-unfenced", false,
		"serve even if the fence block's BMC does not confirm the old primary's host off (metal then relies on the primary's lease, as without a fence block)")
	cmd.Flags().DurationVar(&f.fenceTimeout, "fence-timeout", 2*time.Minute, "how long the fence block's BMC may take to power the old primary's host off and confirm it")
	return cmd
}
