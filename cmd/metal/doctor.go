package main

import (
	"os"
	"os/signal"
	"time"

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/doctor"
)

type doctorFlags struct {
	vars        varFlags
	site        siteFlag
	asJSON      bool
	stateDir    string
	listen      string
	tftpAddr    string
	bmcTimeout  time.Duration
	concurrency int
}

func newDoctorCmd(a *app) *cobra.Command {
	var f doctorFlags
	cmd := &cobra.Command{
		Use:     "doctor [--site FILE]",
		Short:   "Check that this host can serve the site: interfaces, ports, files, BMCs, state",
		Long:    helpText("doctor") + deprecatedFileArg,
		Example: helpText("doctor.examples"),
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := f.site.file(args)
			if err != nil {
				return err
			}
			res, diags := f.vars.load(path)
			view.Diags(a.stderr, res.Files, diags)
			if diags.HasErrors() {
				return silentExit(exitFailed)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			checks := doctor.Run(ctx, doctor.Options{
				Site: res.Site, SitePath: path, StateDir: f.stateDir, Listen: f.listen,
				TFTPAddr: f.tftpAddr, BMCTimeout: f.bmcTimeout, Concurrency: f.concurrency,
				Logger: a.logger(),
			})
			if f.asJSON {
				if err := view.JSON(a.stdout, doctorReport{OK: !doctor.Failed(checks), Checks: checks}); err != nil {
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
	f.vars.register(cmd)
	f.site.register(cmd.Flags())
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print the checks as JSON for scripts")
	cmd.Flags().StringVar(&f.stateDir, "state-dir", "", "the state directory metal serve will use (as its --state-dir)")
	cmd.Flags().StringVar(&f.listen, "listen", "", "the HTTP listen address metal serve will use (default: the site's listen)")
	cmd.Flags().StringVar(&f.tftpAddr, "tftp-addr", ":69", "the TFTP address metal serve will use (as its --tftp-addr)")
	cmd.Flags().DurationVar(&f.bmcTimeout, "bmc-timeout", 10*time.Second, "how long each BMC has to answer")
	cmd.Flags().IntVar(&f.concurrency, "concurrency", 16, "BMCs checked at once")
	return cmd
}

// doctorReport is the --json form.
type doctorReport struct {
	OK     bool           `json:"ok"`
	Checks []doctor.Check `json:"checks"`
}
