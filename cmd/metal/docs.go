package main

import (
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newDocsCmd writes metal's reference from its own commands: man pages
// (the Debian package ships them) and Markdown. It is hidden: a build step,
// not something an operator runs.
func newDocsCmd(a *app) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:    "docs [--format man|markdown] DIR",
		Short:  "Write metal's reference (man pages or Markdown), one page per command, into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true // the same pages for the same metal, whenever built
			switch format {
			case "man":
				return doc.GenManTree(root, &doc.GenManHeader{Section: "1", Source: "metal " + version, Manual: "metal manual"}, dir)
			case "markdown":
				return doc.GenMarkdownTree(root, dir)
			default:
				return usageError("--format %q: want man or markdown", format)
			}
		},
	}
	cmd.Flags().StringVar(&format, "format", "man", "man or markdown")
	return cmd
}
