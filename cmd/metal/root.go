package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Exit codes, documented in `metal --help`.
const (
	exitOK      = 0 // success
	exitFailed  = 1 // invalid input or a failed operation
	exitUsage   = 2 // the command line itself is wrong
	exitChanges = 2 // plan --detailed-exitcode: changes present
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

// exitError carries a specific exit code out of a verb.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// silentExit ends the command with code without printing anything more: the
// verb already told the user what went wrong.
func silentExit(code int) error { return &exitError{code: code} }

// usageError marks an error in how the command was called (exit 2).
func usageError(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
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
		return &exitError{code: exitUsage, err: fmt.Errorf("%w\nSee '%s --help'.", err, c.CommandPath())}
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
	root.SetArgs(terraformStyleFlags(root, args))
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(stderr, "Error:", ee.err)
		}
		return ee.code
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

// terraformStyleFlags lets long flags be written with one dash, as
// Terraform users type them (-var, -var-file, -check): "-name" and
// "-name=value" become "--name..." when name is a long flag of some verb.
// Arguments after "--" are left alone.
func terraformStyleFlags(root *cobra.Command, args []string) []string {
	long := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) { long[f.Name] = true })
		c.PersistentFlags().VisitAll(func(f *pflag.Flag) { long[f.Name] = true })
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	out := make([]string, len(args))
	for i, arg := range args {
		out[i] = arg
		if arg == "--" {
			copy(out[i:], args[i:])
			break
		}
		if len(arg) > 2 && arg[0] == '-' && arg[1] != '-' {
			name, _, _ := strings.Cut(arg[1:], "=")
			if len(name) > 1 && long[name] {
				out[i] = "-" + arg
			}
		}
	}
	return out
}
