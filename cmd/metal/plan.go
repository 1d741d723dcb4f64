package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/cmd/metal/internal/view"
	apiclient "github.com/metal-dev/metal/daemon/api/client"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/converge/runner"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/bolt"
	"github.com/metal-dev/metal/site"
)

func newPlanCmd(a *app) *cobra.Command {
	var asJSON, detailed, noColor bool
	var out string
	var targets []string
	refresh := true
	var sf arguments.Site
	cmd := &cobra.Command{
		Use:     "plan [--site FILE]",
		Short:   "Show what apply would change, machine by machine",
		Long:    helpText("plan") + helpText("site-file-arg"),
		Example: helpText("plan.examples"),
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, path, err := sf.Load(a.stderr, args)
			if err != nil {
				return err
			}
			var p *plan.Plan
			if refresh {
				machines, err := observedMachines(cmd.Context(), a, res.Site, filepath.Dir(path))
				if err != nil {
					return failed(err)
				}
				p, err = runner.Plan(cmd.Context(), res.Site, machines, hardwareBMCs(a), targets)
			} else {
				p, err = plan.Compute(res.Site, nil).Only(targets)
			}
			if err != nil {
				return usageError("--target: %v", err)
			}
			if out != "" {
				if err := plan.Save(out, p, path, res.Digest()); err != nil {
					return err
				}
			}
			if asJSON {
				if err := p.WriteJSON(a.stdout); err != nil {
					return err
				}
			} else {
				view.Plan(a.stdout, p, view.Color(a.stdout, noColor))
				if out != "" {
					fmt.Fprintf(a.stdout, "\nSaved the plan to %s.\n", out)
				}
			}
			if detailed && p.HasChanges() {
				return silentExit(exitChanges)
			}
			return nil
		},
	}
	sf.Register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the plan as JSON for scripts")
	cmd.Flags().BoolVar(&detailed, "detailed-exitcode", false, "exit 0 when nothing would change, 2 when something would, 1 on error")
	cmd.Flags().StringVar(&out, "out", "", "also save the plan as JSON to this file")
	cmd.Flags().BoolVar(&noColor, "no-color", false, "never color the output")
	cmd.Flags().StringArrayVar(&targets, "target", nil, "plan only this machine (repeatable)")
	cmd.Flags().BoolVar(&refresh, "refresh", true, "read what metal observed from the state store; false plans as if nothing was ever applied")
	return cmd
}

// hardwareBMCs are the BMCs plan and apply read hardware settings from.
func hardwareBMCs(a *app) apply.BMCFunc { return apply.PlanBMCs(a.logger(), nil) }

// observedMachines reads the machines (what metal last applied to each,
// the deep inventory their BMCs last reported) from the site's state
// store, or the metal serve that holds it; plan changes nothing.
func observedMachines(ctx context.Context, a *app, s *site.Site, siteDir string) ([]inventory.Machine, error) {
	machines, err := apiclient.Machines(ctx, site.ResolveState(s.Settings.State, siteDir), a.logger())
	if errors.Is(err, bolt.ErrLocked) {
		return nil, fmt.Errorf("%w; or plan without reading it: --refresh=false", err)
	}
	return machines, err
}
