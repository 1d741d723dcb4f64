package main

import (
	"fmt"

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"
)

type validateFileResult struct {
	File         string          `json:"file"`
	Valid        bool            `json:"valid"`
	Machines     int             `json:"machines"`
	ErrorCount   int             `json:"error_count"`
	WarningCount int             `json:"warning_count"`
	Diagnostics  []view.JSONDiag `json:"diagnostics"`
}

func newValidateCmd(a *app) *cobra.Command {
	var vf varFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "validate FILE...",
		Short:   "Check site files for errors; touches nothing",
		Long:    helpText("validate"),
		Example: helpText("validate.examples"),
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			var results []validateFileResult
			failed := false
			for _, path := range files {
				res, diags := vf.load(path)
				r := validateFileResult{File: path, Valid: !diags.HasErrors(), Diagnostics: view.JSONDiags(diags)}
				if res.Site != nil {
					r.Machines = len(res.Site.Machines)
				}
				for _, d := range diags {
					if d.Severity == hcl.DiagError {
						r.ErrorCount++
					} else {
						r.WarningCount++
					}
				}
				failed = failed || !r.Valid
				results = append(results, r)
				if !asJSON {
					view.Diags(a.stderr, res.Files, diags)
					if r.Valid {
						fmt.Fprintf(a.stdout, "%s: valid (%d machines)\n", path, r.Machines)
					} else {
						fmt.Fprintf(a.stdout, "%s: %d error(s), %d warning(s)\n", path, r.ErrorCount, r.WarningCount)
					}
				}
			}
			if asJSON {
				if err := view.JSON(a.stdout, results); err != nil {
					return err
				}
			}
			if failed {
				return silentExit(exitFailed)
			}
			return nil
		},
	}
	vf.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print results as JSON (one object per file) for scripts")
	return cmd
}
