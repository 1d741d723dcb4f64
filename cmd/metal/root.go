package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
)

// Exit codes, documented in `metal --help`.
const (
	exitOK      = arguments.ExitOK
	exitFailed  = arguments.ExitFailed
	exitUsage   = arguments.ExitUsage
	exitChanges = arguments.ExitChanges
)

// The errors that end a verb with an exit code of its own.
var (
	failed     = arguments.Failed
	silentExit = arguments.Silent
	usageError = arguments.Usage
)

// app is what every verb shares: where output goes and how to log.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	logLevel       string
}

// logger returns a slog logger on stderr at the level chosen by --log-level.
func (a *app) logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(a.logLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: lvl}))
}

// verbs are the constructors of every top-level verb, one file each.
var verbs = []func(*app) *cobra.Command{
	newAgentCmd,
	newApplyCmd,
	newBackupCmd,
	newBMCCmd,
	newConsoleCmd,
	newDocsCmd,
	newDoctorCmd,
	newEventsCmd,
	newFmtCmd,
	newImagesCmd,
	newInitCmd,
	newLabCmd,
	newMachinesCmd,
	newPlanCmd,
	newPromoteCmd,
	newRestoreCmd,
	newServeCmd,
	newStandbyCmd,
	newTokenCmd,
	newValidateCmd,
	newVBMCCmd,
	newVersionCmd,
}

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:           "metal",
		Short:         "Own your servers: netboot, provision and converge a site from one HCL file",
		Long:          helpText("metal"),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &arguments.ExitError{Code: exitUsage, Err: fmt.Errorf("%w\nSee '%s --help'.", err, c.CommandPath())}
	})
	for _, v := range verbs {
		root.AddCommand(v(a))
	}
	return root
}

// run executes the command line and returns the process exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, logLevel: "info"}
	if lvl := os.Getenv("METAL_LOG_LEVEL"); lvl != "" {
		a.logLevel = lvl
	}
	root := newRootCmd(a)
	root.SetArgs(arguments.TerraformStyle(root, args))
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	var ee *arguments.ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			fmt.Fprintln(stderr, "Error:", ee.Err)
		}
		return ee.Code
	}
	// cobra reports unknown commands and bad argument counts as plain errors.
	msg := err.Error()
	if strings.HasPrefix(msg, "unknown command") || strings.Contains(msg, "arg(s)") || strings.HasPrefix(msg, "unknown flag") {
		fmt.Fprintf(stderr, "Error: %s\nSee 'metal --help'.\n", msg)
		return exitUsage
	}
	fmt.Fprintln(stderr, "Error:", err)
	return exitFailed
}
