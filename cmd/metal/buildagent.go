package main

import (
	"fmt"
	"os"

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/images/initramfs"
)

type buildAgentFlags struct {
	sitePath      string
	vars          varFlags
	out           string
	binary        string
	kernelDir     string
	kernelRelease string
	pkg           string
	cacheDir      string
	modules       []string
	extraModules  []string
	json          bool
}

func newBuildAgentCmd(a *app) *cobra.Command {
	var f buildAgentFlags
	cmd := &cobra.Command{
		Use:     "build-agent",
		Short:   "Build the install agent's initramfs (metal as /init, with NIC and disk drivers)",
		Long:    helpText("images-build-agent"),
		Example: helpText("images-build-agent.examples"),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.out == "" {
				return usageError("build-agent needs -o FILE: where to write the initramfs")
			}
			if f.sitePath != "" {
				res, diags := f.vars.load(f.sitePath)
				view.Diags(a.stderr, res.Files, diags)
				if diags.HasErrors() {
					return silentExit(exitFailed)
				}
			}
			bin := f.binary
			if bin == "" {
				exe, err := os.Executable()
				if err != nil {
					return &exitError{code: exitFailed, err: fmt.Errorf("which binary is metal: %w (give --binary)", err)}
				}
				bin = exe
			}
			mods := f.modules
			if len(mods) == 0 {
				mods = append([]string(nil), initramfs.DefaultModules...)
			}
			mods = append(mods, f.extraModules...)
			res, err := initramfs.BuildAgent(cmd.Context(), initramfs.Options{
				Binary: bin, KernelDir: f.kernelDir, KernelRelease: f.kernelRelease,
				Package: f.pkg, CacheDir: f.cacheDir, Modules: mods, Out: f.out, Logger: a.logger(),
			})
			if err != nil {
				return &exitError{code: exitFailed, err: err}
			}
			if f.json {
				return view.JSON(a.stdout, res)
			}
			fmt.Fprintf(a.stdout, "initrd:  %s\nkernel:  %s\nrelease: %s\nmodules: %d\n", res.Initrd, res.Kernel, res.Release, len(res.Modules))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.sitePath, "site", "", "the site file (checked; optional)")
	f.vars.register(cmd)
	fl.StringVarP(&f.out, "out", "o", "", "write the initramfs (gzip'd cpio) to FILE")
	fl.StringVar(&f.binary, "binary", "", "the static metal binary to pack as /init (default: this one)")
	fl.StringVar(&f.kernelDir, "kernel-dir", "", "a root holding boot/vmlinuz-REL and lib/modules/REL (default: this host's, else fetched)")
	fl.StringVar(&f.kernelRelease, "kernel-release", "", "the kernel release to use when several are present")
	fl.StringVar(&f.pkg, "package", initramfs.DefaultPackage, "the Debian kernel package to fetch when no kernel is at hand")
	fl.StringVar(&f.cacheDir, "cache-dir", initramfs.DefaultCacheDir, "where fetched kernel packages are kept")
	fl.StringArrayVar(&f.modules, "module", nil, "a kernel module to include, replacing the default list (repeatable)")
	fl.StringArrayVar(&f.extraModules, "extra-module", nil, "a kernel module to include besides the default list (repeatable)")
	fl.BoolVar(&f.json, "json", false, "print the result as JSON")
	return cmd
}
