package main

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/metal-dev/metal/cmd/metal/internal/view"
	"github.com/metal-dev/metal/internal/atomicfile"
	"github.com/metal-dev/metal/site"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"
)

func newFmtCmd(a *app) *cobra.Command {
	var check, showDiff bool
	cmd := &cobra.Command{
		Use:     "fmt [-check] [-diff] FILE...",
		Short:   "Rewrite site files in the canonical HCL style",
		Long:    helpText("fmt"),
		Example: helpText("fmt.examples"),
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			unformatted, failed := false, false
			for _, path := range files {
				src, err := readSource(a.stdin, path)
				if err != nil {
					fmt.Fprintln(a.stderr, "Error:", err)
					failed = true
					continue
				}
				out, diags := site.Format(path, src)
				if diags.HasErrors() {
					view.Diags(a.stderr, map[string]*hcl.File{path: {Bytes: src}}, diags)
					failed = true
					continue
				}
				if path == "-" && !check {
					a.stdout.Write(out)
					continue
				}
				if bytes.Equal(src, out) {
					continue
				}
				unformatted = true
				fmt.Fprintln(a.stdout, path)
				if showDiff {
					view.Diff(a.stdout, path, src, out)
				}
				if !check {
					if err := writeFileKeepMode(path, out); err != nil {
						fmt.Fprintln(a.stderr, "Error:", err)
						failed = true
					}
				}
			}
			if failed || (check && unformatted) {
				return silentExit(exitFailed)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&check, "check", false, "write nothing; exit 1 if any file is not formatted")
	cmd.Flags().BoolVar(&showDiff, "diff", false, "print the changes as a unified diff")
	return cmd
}

func readSource(stdin io.Reader, path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(io.LimitReader(stdin, 64<<20))
	}
	return os.ReadFile(path)
}

// writeFileKeepMode replaces path's content, keeping its permissions.
func writeFileKeepMode(path string, data []byte) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, st.Mode().Perm())
}
