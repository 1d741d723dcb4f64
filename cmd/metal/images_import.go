package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"
)

// importRow is the --json form of one imported file.
type importRow struct {
	File    string   `json:"file"`
	SHA256  string   `json:"sha256"`
	SHA512  string   `json:"sha512"`
	Size    int64    `json:"size"`
	New     bool     `json:"new"`
	Matches []string `json:"matches"`
}

func newImagesImportCmd(a *app) *cobra.Command {
	var f imagesFlags
	cmd := &cobra.Command{
		Use:   "import FILE...",
		Short: "Add local files to the image cache (for air-gapped sites)",
		Long:  helpText("images-import"),
		Example: `  metal images import --site site.hcl debian-12.raw.zst vmlinuz initrd.gz
  metal images import --site site.hcl --json /media/usb/*.zst`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, paths []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			env, err := openImages(a, &f, nil)
			if err != nil {
				return err
			}
			defer env.Close()
			var rows []importRow
			failed := false
			for _, p := range paths {
				im, err := env.cache.Import(ctx, p)
				if err != nil {
					fmt.Fprintf(a.stderr, "metal: %v\n", err)
					failed = true
					continue
				}
				row := importRow{File: p, SHA256: im.SHA256.String(), SHA512: im.SHA512.String(), Size: im.Size, New: im.New, Matches: []string{}}
				for _, file := range env.cat.Files {
					if file.Source.Checksum != row.SHA256 && file.Source.Checksum != row.SHA512 {
						continue
					}
					if _, err := env.cache.Ensure(ctx, file); err != nil {
						fmt.Fprintf(a.stderr, "metal: %v\n", err)
						failed = true
						continue
					}
					row.Matches = append(row.Matches, file.Image+" "+string(file.Kind))
				}
				rows = append(rows, row)
				if f.asJSON {
					continue
				}
				what := "no image of the site references it (metal images gc will remove it)"
				if len(row.Matches) > 0 {
					what = "serves " + strings.Join(row.Matches, ", ")
				}
				fmt.Fprintf(a.stdout, "%s: %s, %s: %s\n", p, view.Size(im.Size), im.SHA256, what)
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
