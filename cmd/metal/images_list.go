package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newImagesListCmd(a *app) *cobra.Command {
	var f imagesFlags
	cmd := &cobra.Command{
		Use:   "list [IMAGE...]",
		Short: "Show the site's image files and whether the cache holds them",
		Long: `List shows every kernel, initrd and disk image of the site's images: its
size and state in the cache, and where it comes from. It reads no file's
content (metal images verify hashes them again) and touches no network.

States: cached (held, verified when stored), partial (a download stopped;
fetch resumes it), missing (not fetched), local (a local file without a
checksum, copied in at the next fetch or serve).`,
		Example: `  metal images list --site site.hcl
  metal images list --site site.hcl debian-12 --json`,
		RunE: func(cmd *cobra.Command, names []string) error {
			env, err := openImages(a, &f, nil)
			if err != nil {
				return err
			}
			defer env.Close()
			files, err := env.selectFiles(names)
			if err != nil {
				return err
			}
			var rows []fileRow
			for _, file := range files {
				rows = append(rows, newFileRow(env.cache.Status(file), nil))
			}
			if f.asJSON {
				return writeJSON(a.stdout, rows)
			}
			printFileTable(a.stdout, rows, termWidth(a.stdout))
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

// printFileTable prints rows as a table; on a terminal of width columns the
// last column (the source, the longest) is cut to fit.
func printFileTable(w io.Writer, rows []fileRow, width int) {
	if len(rows) == 0 {
		fmt.Fprintln(w, "The site declares no image files.")
		return
	}
	cells := [][]string{{"IMAGE", "KIND", "NAME", "SIZE", "STATE", "SOURCE"}}
	for _, r := range rows {
		size := "-"
		if r.Size > 0 {
			size = humanBytes(r.Size)
		}
		state := r.State
		if r.Error != "" {
			state = "error"
		}
		cells = append(cells, []string{r.Image, r.Kind, r.Name, size, state, r.Source})
	}
	if width > 0 {
		// Width of every column but the last, as tabwriter lays them out.
		used := 0
		for c := 0; c < len(cells[0])-1; c++ {
			m := 0
			for _, row := range cells {
				m = max(m, len(row[c]))
			}
			used += m + 2
		}
		room := max(width-used, 12)
		for _, row := range cells {
			if last := row[len(row)-1]; len(last) > room {
				row[len(row)-1] = last[:room-1] + "…"
			}
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range cells {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
}
