package main

import (
	"fmt"

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"
)

func newImagesFetchCmd(a *app) *cobra.Command {
	var f imagesFlags
	cmd := &cobra.Command{
		Use:     "fetch [IMAGE...]",
		Short:   "Download the site's images into the cache and verify them",
		Long:    helpText("images-fetch"),
		Example: helpText("images-fetch.examples"),
		RunE: func(cmd *cobra.Command, names []string) error {
			ctx, stop := interruptible(cmd.Context())
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
					view.Fetched(a.stdout, file, st, err)
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
