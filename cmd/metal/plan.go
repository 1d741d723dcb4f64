package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/metal-dev/metal/site"
	"github.com/metal-dev/metal/site/plan"
)

func init() { register(newPlanCmd) }

func newPlanCmd(a *app) *cobra.Command {
	var vf varFlags
	var asJSON, detailed, noColor bool
	var out string
	cmd := &cobra.Command{
		Use:   "plan FILE",
		Short: "Show what apply would change, machine by machine",
		Long: `Plan validates the site file and compares it with what metal has observed
of each machine, then prints the changes apply would make:

  +    provision a machine new to metal
  ~    update in place (power, labels, BMC settings)
  -/+  reprovision: the disk is rewritten (image, disk or MAC changed)
  -    deprovision: the machine left the file (power off, wipe)

Sensitive values (variables declared sensitive = true, BMC passwords) are
shown as (sensitive). Nothing is changed by plan.`,
		Example: `  metal plan hcl-examples/homelab.hcl
  metal plan --json site.hcl > plan.json
  metal plan --detailed-exitcode site.hcl   # exit 2 when there are changes
  metal plan -var nodes_per_rack=40 --out tonight.plan site.hcl`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, diags := vf.load(args[0])
			writeDiags(a.stderr, res.Files, diags)
			if diags.HasErrors() {
				return silentExit(exitFailed)
			}
			p := plan.Compute(res.Site, observedAttributes(res.Site))
			if out != "" {
				if err := savePlan(out, p); err != nil {
					return err
				}
			}
			if asJSON {
				if err := writeJSON(a.stdout, p); err != nil {
					return err
				}
			} else {
				useColor := !noColor && isTerminal(a.stdout) && os.Getenv("NO_COLOR") == ""
				renderPlan(a.stdout, p, useColor)
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
	vf.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the plan as JSON for scripts")
	cmd.Flags().BoolVar(&detailed, "detailed-exitcode", false, "exit 0 when nothing would change, 2 when something would, 1 on error")
	cmd.Flags().StringVar(&out, "out", "", "also save the plan as JSON to this file")
	cmd.Flags().BoolVar(&noColor, "no-color", false, "never color the output")
	return cmd
}

// observedAttributes returns what metal last applied to each machine. Until
// the site's state store is read here, nothing has been applied, so every
// machine is new.
func observedAttributes(*site.Site) map[string]plan.Attributes { return nil }

func savePlan(path string, p *plan.Plan) error {
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("save plan: %w", err)
	}
	return writeFileAtomic(path, append(data, '\n'), 0o644)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
