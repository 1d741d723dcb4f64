package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/internal/serialterm"
	"github.com/metal-dev/metal/lab"
)

// The lab verbs that run something inside the lab: console, apply, exec.

func newLabConsoleCmd(a *app, f *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "console NAME",
		Short:   "Attach to a VM's serial console (Ctrl-] leaves)",
		Long:    helpText("lab-console"),
		Example: helpText("lab-console.examples"),
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := lab.Load(f.dir)
			if err != nil {
				return err
			}
			vm, ok := st.VM(args[0])
			if !ok {
				return usageError("no VM %q in the lab (metal lab status lists them)", args[0])
			}
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			conn, via, err := st.Console(ctx, vm)
			if errors.Is(err, lab.ErrSOLOnly) {
				// The BMC is inside the lab's namespace: metal console
				// opens its SOL from there.
				self, xerr := os.Executable()
				if xerr != nil {
					return xerr
				}
				fmt.Fprintf(a.stderr, "No metal serve runs for the lab: %s's console is its BMC's Serial-over-LAN; opening it with metal console inside the lab.\n", vm.Name)
				return labExec(ctx, a, st, []string{self, "console", "--site", st.Site, vm.Name})
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "Console of %s %s.\r\n", vm.Name, via)
			return serialterm.Session(ctx, a.stdin, a.stdout, a.stderr, vm.Name, vm.Name+"'s console ended (powered off or restarting, or metal serve stopped)",
				func(ctx context.Context, in io.Reader, out io.Writer) error {
					return serialterm.Attach(ctx, conn, in, out)
				})
		},
	}
}

func newLabApplyCmd(a *app, f *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "apply [-- APPLY FLAGS...]",
		Short:   "Provision every VM: metal apply --auto-approve of the lab's site, inside the lab",
		Long:    helpText("lab-apply"),
		Example: helpText("lab-apply.examples"),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := lab.Load(f.dir)
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			return labExec(cmd.Context(), a, st, append([]string{self, "apply", "--auto-approve",
				"--console-log", st.ConsoleLog(), st.Site}, args...))
		},
	}
}

func newLabExecCmd(a *app, f *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "exec -- COMMAND [ARGS...]",
		Short:   "Run a command inside the lab's network namespace",
		Long:    helpText("lab-exec"),
		Example: helpText("lab-exec.examples"),
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := lab.Load(f.dir)
			if err != nil {
				return err
			}
			return labExec(cmd.Context(), a, st, args)
		},
	}
}

// labExec runs argv inside the lab's namespace with the terminal attached,
// and passes its exit status on.
func labExec(ctx context.Context, a *app, st *lab.State, argv []string) error {
	c := st.Command(ctx, argv...)
	c.Stdin, c.Stdout, c.Stderr = a.stdin, a.stdout, a.stderr
	if err := c.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return silentExit(ee.ExitCode())
		}
		return fmt.Errorf("run %s in the lab: %w", argv[0], err)
	}
	return nil
}
