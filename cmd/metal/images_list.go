package main

import (
	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"
)

func newImagesListCmd(a *app) *cobra.Command {
	var f imagesFlags
	cmd := &cobra.Command{
		Use:     "list [IMAGE...]",
		Short:   "Show the site's image files and whether the cache holds them",
		Long:    helpText("images-list"),
		Example: helpText("images-list.examples"),
		RunE: func(cmd *cobra.Command, names []string) error {
			env, files, err := openFiles(a, &f, nil, names)
			if err != nil {
				return err
			}
			defer env.Close()
			var rows []view.FileRow
			for _, file := range files {
				rows = append(rows, view.NewFileRow(env.cache.Status(file), nil))
			}
			if f.asJSON {
				return view.JSON(a.stdout, rows)
			}
			view.FileTable(a.stdout, rows, view.Width(a.stdout))
			return nil
		},
	}
	f.register(cmd)
	return cmd
}
