package main

import (
	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/images"
)

func newImagesVerifyCmd(a *app) *cobra.Command {
	var f imagesFlags
	cmd := &cobra.Command{
		Use:     "verify [IMAGE...]",
		Short:   "Hash the cached image files again and check them against their checksums",
		Long:    helpText("images-verify"),
		Example: helpText("images-verify.examples"),
		RunE: func(cmd *cobra.Command, names []string) error {
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			env, files, err := openFiles(a, &f, nil, names)
			if err != nil {
				return err
			}
			defer env.Close()
			var rows []view.FileRow
			bad := 0
			for _, file := range files {
				st, err := env.cache.Verify(ctx, file)
				if err != nil || st.State != images.StateVerified {
					bad++
				}
				rows = append(rows, view.NewFileRow(st, err))
				if ctx.Err() != nil {
					break
				}
			}
			if f.asJSON {
				if err := view.JSON(a.stdout, rows); err != nil {
					return err
				}
			} else {
				view.FileTable(a.stdout, rows, view.Width(a.stdout))
				for _, r := range rows {
					if r.Error != "" {
						a.logger().Error("verify failed", "image", r.Image, "file", r.Name, "err", r.Error)
					}
				}
			}
			if bad > 0 {
				return silentExit(exitFailed)
			}
			return nil
		},
	}
	f.register(cmd)
	return cmd
}
