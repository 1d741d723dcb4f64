package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"
)

func newImagesFetchCmd(a *app) *cobra.Command {
	var f imagesFlags
	cmd := &cobra.Command{
		Use:   "fetch [IMAGE...]",
		Short: "Download the site's images into the cache and verify them",
		Long: `Fetch downloads every kernel, initrd and disk image of the site's images (or
of the images named) into the content-addressed cache in the state
directory, and checks each against its checksum before it can be served.

An interrupted download resumes where it stopped, here or at the next run
(http and https with Range, sftp by offset). A file that does not match its
checksum is deleted, never served. Files already in the cache are hashed
again, not downloaded. After a fetch, provisioning needs no network beyond
the site's own: copy the state directory, or use metal images import.

sftp:// sources log in with your ssh-agent or ~/.ssh/id_* keys and check
the server against ~/.ssh/known_hosts; an unknown or changed host key is
refused.`,
		Example: `  metal images fetch --site site.hcl
  metal images fetch --site site.hcl debian-12
  metal images fetch --site site.hcl --state-dir /var/lib/metal --json`,
		RunE: func(cmd *cobra.Command, names []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var progress = a.stderr
			if f.asJSON {
				progress = nil
			}
			env, files, err := openFiles(a, &f, progress, names)
			if err != nil {
				return err
			}
			defer env.Close()
			var rows []view.FileRow
			failed := 0
			for _, file := range files {
				_, err := env.cache.Ensure(ctx, file)
				st := env.cache.Status(file)
				if err != nil {
					failed++
					if ctx.Err() != nil {
						err = fmt.Errorf("interrupted; the next fetch resumes the download: %w", ctx.Err())
					}
				}
				rows = append(rows, view.NewFileRow(st, err))
				if !f.asJSON {
					if err != nil {
						fmt.Fprintf(a.stdout, "%-12s %-7s %s: FAILED: %v\n", file.Image, file.Kind, file.Name, err)
					} else {
						fmt.Fprintf(a.stdout, "%-12s %-7s %s: %s, %s\n", file.Image, file.Kind, file.Name, view.Size(st.Size), st.Digest)
					}
				}
				if ctx.Err() != nil {
					break
				}
			}
			if f.asJSON {
				if err := view.JSON(a.stdout, rows); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(a.stdout, "%d of %d files ready to serve\n", len(rows)-failed, len(files))
			}
			if failed > 0 {
				return silentExit(exitFailed)
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().IntVar(&f.retries, "retries", 4, "times a download that fails without progress is tried again (one that progressed always resumes)")
	return cmd
}
