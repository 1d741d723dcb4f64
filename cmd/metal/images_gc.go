package main

import (
	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/images"
)

func newImagesGCCmd(a *app) *cobra.Command {
	var f imagesFlags
	var dryRun bool
	cmd := &cobra.Command{
		Use:     "gc",
		Short:   "Remove cached image files no image of the site references",
		Long:    helpText("images-gc"),
		Example: helpText("images-gc.examples"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := openImages(a, &f, nil)
			if err != nil {
				return err
			}
			defer env.Close()
			removed, err := env.cache.GC(env.cat, dryRun)
			if f.asJSON {
				if removed == nil {
					removed = []images.Removed{}
				}
				if jerr := view.JSON(a.stdout, removed); jerr != nil {
					return jerr
				}
			} else {
				view.Removed(a.stdout, removed, dryRun)
			}
			return err
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only list what would be removed")
	return cmd
}
