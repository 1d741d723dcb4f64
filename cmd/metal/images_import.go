package main

import (
	"fmt"

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"
)

func newImagesImportCmd(a *app) *cobra.Command {
	var f imagesFlags
	cmd := &cobra.Command{
		Use:     "import FILE...",
		Short:   "Add local files to the image cache (for air-gapped sites)",
		Long:    helpText("images-import"),
		Example: helpText("images-import.examples"),
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, paths []string) error {
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			env, err := openImages(a, &f, nil)
			if err != nil {
				return err
			}
			defer env.Close()
			var rows []view.Imported
			failed := false
			for _, p := range paths {
				im, err := env.cache.Import(ctx, p)
				if err != nil {
					fmt.Fprintf(a.stderr, "metal: %v\n", err)
					failed = true
					continue
				}
				row := view.NewImported(p, im)
				for _, file := range env.cat.Matching(im) {
					if _, err := env.cache.Ensure(ctx, file); err != nil {
						fmt.Fprintf(a.stderr, "metal: %v\n", err)
						failed = true
						continue
					}
					row.Matches = append(row.Matches, file.Image+" "+string(file.Kind))
				}
				rows = append(rows, row)
				if !f.asJSON {
					row.Line(a.stdout)
				}
			}
			if f.asJSON {
				if err := view.JSON(a.stdout, rows); err != nil {
					return err
				}
			}
			if failed {
				return silentExit(exitFailed)
			}
			return nil
		},
	}
	f.register(cmd)
	return cmd
}
