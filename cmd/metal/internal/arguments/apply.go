package arguments

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/metal-dev/metal/converge/plan"
	"github.com/metal-dev/metal/daemon"
)

// Apply are metal apply's flags: the run they ask for (Request, as metal
// serve takes it too), how this process shows it, and how it serves the
// netboot when no metal serve runs for the site (Serve, Agent).
type Apply struct {
	Site        Site
	Request     daemon.ApplyRequest
	AutoApprove bool
	JSON        bool
	NoColor     bool
	Serve       daemon.Options
	Agent       AgentBoot
}

func (f *Apply) Register(fl *pflag.FlagSet) {
	f.Site.Register(fl)
	fl.BoolVar(&f.AutoApprove, "auto-approve", false, "apply without asking for confirmation")
	fl.BoolVar(&f.Request.AllowDestroy, "allow-destroy", false, "carry out reprovisions (the new image overwrites the disk), deprovisions (the disks are wiped as --wipe says), and firmware downgrades")
	fl.StringVar((*string)(&f.Request.Wipe), "wipe", "", `how a deprovision erases each disk, for this run (default: the machine's wipe in the site file while it was declared, else quick): "quick" zeroes the first and last MiB (partition tables, filesystem and RAID labels; the data stays readable); "discard" tells the device every block is unused (BLKDISCARD: fast on SSDs, but the device decides what reads return) and overwrites when old data still reads back; "zero" overwrites every byte; "secure" asks the drive to erase itself (NVMe Sanitize, else Format NVM with secure erase; ATA SECURITY ERASE UNIT unless the drive is frozen or locked; else BLKSECDISCARD) and overwrites when it cannot, saying why; all but quick then read back samples across the whole disk: no sampled sector may still hold its old content`)
	fl.BoolVar(&f.Request.Resume, "resume", false, "continue the last interrupted apply run instead of starting a new one")
	fl.BoolVar(&f.JSON, "json", false, "print progress as JSON lines (one object per event) instead of text")
	fl.BoolVar(&f.NoColor, "no-color", false, "never color the output")
	fl.StringArrayVar(&f.Request.Targets, "target", nil, "apply only to this machine (repeatable)")
	Servers(fl, &f.Serve)
	f.Agent.Register(fl)
	fl.DurationVar(&f.Request.StepTimeout, "step-timeout", 2*time.Minute, "bound on one try of one BMC step of one machine")
	fl.DurationVar(&f.Request.AgentTimeout, "agent-timeout", 30*time.Minute, "bound on the wait for a machine's install agent (image write) or diskless boot")
	fl.DurationVar(&f.Request.BootTimeout, "boot-timeout", 3*time.Minute, "bound on the wait, after power-on and after the install agent's reboot, for a machine's first DHCP request or fetch; a machine silent that long fails, naming what was last seen of it (negative: no bound)")
	fl.StringVar(&f.Request.ConsoleLog, "console-log", "", "where machines' console logs are, with {machine} for the name, for the report of a machine that does not boot (metal lab apply sets it)")
}

// Parse checks the flags with the argument, a plan saved by metal plan
// --out or (deprecated) the site file, and reads the plan: saved is nil
// for a site file; path is the argument as the user named it, sitePath
// the site file to load.
func (f *Apply) Parse(args []string) (saved *plan.Plan, path, sitePath string, err error) {
	if !f.Request.Wipe.Valid() {
		return nil, "", "", Usage("--wipe %q: use quick, discard, zero or secure", f.Request.Wipe)
	}
	if len(args) > 0 {
		if saved, err = plan.ReadSaved(args[0]); err != nil {
			return nil, "", "", Failed(err)
		}
	}
	if saved == nil {
		sitePath, err = f.Site.File(args)
		return nil, sitePath, sitePath, err
	}
	if f.Request.Resume || len(f.Request.Targets) > 0 {
		return nil, "", "", Usage("a saved plan is applied as saved: --resume and --target go with a site file")
	}
	if f.Site.Path != "" {
		return nil, "", "", Usage("a saved plan names its site file (%s): drop --site", saved.SiteFile)
	}
	return saved, args[0], saved.SiteFile, nil
}

// Run is the run the flags ask for, in-process or submitted to metal serve
// alike; a saved plan names its targets.
func (f *Apply) Run(saved *plan.Plan) daemon.ApplyRequest {
	req := f.Request
	if saved != nil {
		req.Targets = saved.Targets
	}
	return req
}
