package main

import (
	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"
)

func newValidateCmd(a *app) *cobra.Command {
	var vf arguments.Vars
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "validate FILE...",
		Short:   "Check site files for errors; touches nothing",
		Long:    helpText("validate"),
		Example: helpText("validate.examples"),
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			var results []view.Validated
			failed := false
			for _, path := range files {
				res, diags := vf.Load(path)
				r := view.NewValidated(path, res, diags)
				failed = failed || !r.Valid
				results = append(results, r)
				if !asJSON {
					view.Diags(a.stderr, res.Files, diags)
					r.Line(a.stdout)
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
	vf.Register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print results as JSON (one object per file) for scripts")
	return cmd
}
