package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/inventory/backup"
)

type standbyFlags struct {
	state arguments.State
	ssh   arguments.SSH
	from  string
	every time.Duration
	once  bool
}

func newStandbyCmd(a *app) *cobra.Command {
	f := &standbyFlags{}
	cmd := &cobra.Command{
		Use:     "standby --site FILE --from sftp://USER@HOST/PATH --every 5m",
		Short:   "Keep this site's state store a replica of the primary's newest snapshot",
		Long:    helpText("standby"),
		Example: helpText("standby.examples"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.from == "" {
				return usageError("--from: name the primary's SFTP directory, like sftp://metal@backup.example/ams1")
			}
			if f.every < time.Second {
				return usageError("--every %v: want at least 1s", f.every)
			}
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			st, store, err := openSiteState(ctx, a, &f.state)
			if err != nil {
				return err
			}
			defer store.Close()
			r, err := f.ssh.Dial(ctx, a.logger(), f.from)
			if err != nil {
				return err
			}
			defer r.Close()
			rep := &backup.Replicator{Remote: r, Site: st.Name, Replica: store, Interval: f.every, Logger: a.logger()}
			return runStandby(ctx, a.stdout, rep, f.once)
		},
	}
	f.state.Register(cmd.Flags())
	f.ssh.Register(cmd.Flags())
	cmd.Flags().StringVar(&f.from, "from", "", "the primary's SFTP directory: sftp://USER@HOST[:PORT]/PATH")
	cmd.Flags().DurationVar(&f.every, "every", 5*time.Minute, "how often to look for a newer snapshot")
	cmd.Flags().BoolVar(&f.once, "once", false, "pull the newest snapshot once, then exit")
	return cmd
}

// runStandby pulls once, or syncs until interrupted, saying what changed.
// With once, a failed pull is the command's failure; else it is retried.
func runStandby(ctx context.Context, w io.Writer, rep *backup.Replicator, once bool) error {
	if !once {
		rep.Synced = func(name string) {
			fmt.Fprintf(w, "%s  replica now holds %s\n", time.Now().Format(time.DateTime), name)
		}
		return rep.Run(ctx)
	}
	name, changed, err := rep.Sync(ctx)
	switch {
	case err != nil:
		return err
	case changed:
		fmt.Fprintf(w, "%s  replica now holds %s\n", time.Now().Format(time.DateTime), name)
	default:
		fmt.Fprintf(w, "replica already holds %s\n", name)
	}
	return nil
}
