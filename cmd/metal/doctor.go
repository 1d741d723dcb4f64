package main

import (
	"os"
	"os/signal"
	"time"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/doctor"
)

type doctorFlags struct {
	site   arguments.Site
	asJSON bool
	opts   doctor.Options
}

func newDoctorCmd(a *app) *cobra.Command {
	var f doctorFlags
	cmd := &cobra.Command{
		Use:     "doctor [--site FILE]",
		Short:   "Check that this host can serve the site: interfaces, ports, files, BMCs, state",
		Long:    helpText("doctor") + helpText("site-file-arg"),
		Example: helpText("doctor.examples"),
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, path, err := f.site.Load(a.stderr, args)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			opts := f.opts
			opts.Site, opts.SitePath, opts.Logger = res.Site, path, a.logger()
			checks := doctor.Run(ctx, opts)
			if f.asJSON {
				if err := view.JSON(a.stdout, view.DoctorReport{OK: !doctor.Failed(checks), Checks: checks}); err != nil {
					return err
				}
			} else {
				view.Checks(a.stdout, a.stderr, checks)
			}
			if doctor.Failed(checks) {
				return silentExit(exitFailed)
			}
			return nil
		},
	}
	f.site.Register(cmd.Flags())
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print the checks as JSON for scripts")
	cmd.Flags().StringVar(&f.opts.StateDir, "state-dir", "", "the state directory metal serve will use (as its --state-dir)")
	cmd.Flags().StringVar(&f.opts.Listen, "listen", "", "the HTTP listen address metal serve will use (default: the site's listen)")
	cmd.Flags().StringVar(&f.opts.TFTPAddr, "tftp-addr", ":69", "the TFTP address metal serve will use (as its --tftp-addr)")
	cmd.Flags().DurationVar(&f.opts.BMCTimeout, "bmc-timeout", 10*time.Second, "how long each BMC has to answer")
	cmd.Flags().IntVar(&f.opts.Concurrency, "concurrency", 16, "BMCs checked at once")
	return cmd
}
