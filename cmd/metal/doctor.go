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
		Use:   "doctor [--site FILE]",
		Short: "Check that this host can serve the site: interfaces, ports, files, BMCs, state",
		Long: `Doctor preflights a site on this host before metal serve or metal apply
touch anything. One line per check:

  ✓  fine
  !  works, but look at it (no carrier yet, no checksum, little room)
  ✗  will fail; the line below it says what to do
  -  does not apply here (a remote file, a network behind relays)

It checks that each network's interface exists, is up and has an address
in its subnet; that ports 67/udp (and 4011/udp in proxy mode), the TFTP port
and the HTTP listen port are free, or held by a running metal serve of this
same site; that the iPXE binaries are there; that each image's local files
exist and match their checksums; that each BMC answers with its credentials,
and knows the BIOS settings (by its attribute registry, when it has one),
firmware components and RAID drives the site declares for its machine;
that the state store opens and is writable (or is held by this site's
metal serve) and the state directory has room.

Doctor binds each port for an instant and writes a small probe file in the
state directory; it powers nothing and changes no machine. Run it as the
user metal serve runs as (root, for ports 67 and 69).

The exit status is 1 if any check fails.` + deprecatedFileArg,
		Example: `  sudo metal doctor --site site.hcl
  sudo metal doctor                    # the site file: $METAL_SITE, ./site.hcl or /etc/metal/site.hcl
  sudo metal doctor --site site.hcl --json | jq '.checks[] | select(.status=="fail")'
  # check as metal serve will run, with its flags:
  sudo metal doctor --site site.hcl --state-dir /var/lib/metal --listen 10.0.0.2:8080
  # BMCs on a slow management network:
  metal doctor --site site.hcl --bmc-timeout 30s`,
		Args: cobra.MaximumNArgs(1),
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
