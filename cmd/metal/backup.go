package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/cmd/metal/internal/view"
	apiclient "github.com/metal-dev/metal/daemon/api/client"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/backup"
)

// openSiteState resolves the site (its name names the snapshots) and opens
// its store.
func openSiteState(ctx context.Context, a *app, f *arguments.State) (arguments.SiteState, inventory.Store, error) {
	st, err := f.Resolve(a.stderr, true)
	if err != nil {
		return st, nil, err
	}
	s, err := apiclient.OpenStore(ctx, st.State, a.logger())
	return st, s, err
}

type backupFlags struct {
	state   arguments.State
	ssh     arguments.SSH
	to      string
	keep    int
	encrypt bool
	asJSON  bool
}

func newBackupCmd(a *app) *cobra.Command {
	f := &backupFlags{}
	cmd := &cobra.Command{
		Use:     "backup --site FILE --to sftp://USER@HOST[:PORT]/PATH",
		Short:   "Write a snapshot of the site's state store to an SFTP server",
		Long:    helpText("backup"),
		Example: helpText("backup.examples"),
		Args:    cobra.NoArgs,
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
			r, err := f.ssh.Dial(ctx, a.logger(), f.to)
			if err != nil {
				return err
			}
			defer r.Close()
			if f.encrypt && r.Key == nil {
				return usageError("--encrypt: name the backup key to seal with (--key)")
			}
			res, err := backup.Backup(ctx, store, r, backup.Options{Site: st.Name, Keep: f.keep, Encrypt: f.encrypt})
			if err != nil {
				return err
			}
			if f.asJSON {
				return view.JSON(a.stdout, res)
			}
			view.Backup(a.stdout, r.Target().String(), res)
			return nil
		},
	}
	f.state.Register(cmd.Flags())
	f.ssh.Register(cmd.Flags())
	cmd.Flags().StringVar(&f.to, "to", "", "the SFTP directory: sftp://USER@HOST[:PORT]/PATH")
	cmd.Flags().IntVar(&f.keep, "keep", 0, "keep the newest N snapshots of the site, delete older ones (0: keep all)")
	cmd.Flags().BoolVar(&f.encrypt, "encrypt", false, "seal the snapshot with age to the backup key (--key): nothing of it, user_data included, is readable on the server")
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print the result as JSON")
	cmd.AddCommand(newBackupKeygenCmd(a))
	return cmd
}

func newBackupKeygenCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "keygen FILE",
		Short:   "Make a backup key: signs snapshots, heartbeats and fences, and seals snapshots",
		Long:    helpText("backup-keygen"),
		Example: helpText("backup-keygen.examples"),
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			k, err := backup.WriteKeyFile(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Backup key %s written to %s. Copy it to the standby; keep it off the SFTP server.\n", k.ID(), args[0])
			return nil
		},
	}
}
