package main

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/metal-dev/metal/cmd/metal/internal/view"
	"github.com/metal-dev/metal/internal/atomicfile"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/pmezard/go-difflib/difflib"
	"github.com/spf13/cobra"
)

func newFmtCmd(a *app) *cobra.Command {
	var check, showDiff bool
	cmd := &cobra.Command{
		Use:   "fmt [-check] [-diff] FILE...",
		Short: "Rewrite site files in the canonical HCL style",
		Long:  helpText("fmt"),
		Example: `  metal fmt site.hcl
  metal fmt -check -diff hcl-examples/*.hcl
  cat site.hcl | metal fmt -`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			unformatted, failed := false, false
			for _, path := range files {
				src, err := readSource(a.stdin, path)
				if err != nil {
					fmt.Fprintln(a.stderr, "Error:", err)
					failed = true
					continue
				}
				if _, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos); diags.HasErrors() {
					files := map[string]*hcl.File{path: {Bytes: src}}
					view.Diags(a.stderr, files, diags)
					failed = true
					continue
				}
				out := hclwrite.Format(src)
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
					d, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
						A: difflib.SplitLines(string(src)), B: difflib.SplitLines(string(out)),
						FromFile: path, ToFile: path + " (formatted)", Context: 3,
					})
					fmt.Fprint(a.stdout, d)
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
