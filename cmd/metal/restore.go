package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backup"
)

type restoreFlags struct {
	state   arguments.State
	ssh     arguments.SSH
	from    string
	replace bool
}

func newRestoreCmd(a *app) *cobra.Command {
	f := &restoreFlags{}
	cmd := &cobra.Command{
		Use:     "restore --site FILE --from sftp://USER@HOST/PATH/SNAPSHOT|latest",
		Short:   "Load a snapshot from an SFTP server into the site's state store",
		Long:    helpText("restore"),
		Example: helpText("restore.examples"),
		Args:    cobra.NoArgs,
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
			dir, name := backup.SplitURL(f.from)
			r, err := f.ssh.Dial(ctx, a.logger(), dir)
			if err != nil {
				return err
			}
			defer r.Close()
			h, err := backup.Restore(ctx, r, st.Name, name, store, backup.RestoreOptions{Replace: f.replace})
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
	f.state.Register(cmd.Flags())
	f.ssh.Register(cmd.Flags())
	cmd.Flags().StringVar(&f.from, "from", "", "the snapshot: sftp://USER@HOST[:PORT]/PATH/NAME, or .../latest")
	cmd.Flags().BoolVar(&f.replace, "replace", false, "drop what the store holds before loading the snapshot")
	return cmd
}
