package main

import (
	"fmt"
	"os"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/images/initramfs"
)

type buildAgentFlags struct {
	sitePath     string
	vars         arguments.Vars
	opts         initramfs.Options
	extraModules []string
	json         bool
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
			if f.opts.Out == "" {
				return usageError("build-agent needs -o FILE: where to write the initramfs")
			}
			if f.sitePath != "" {
				if _, err := f.vars.LoadSite(a.stderr, f.sitePath); err != nil {
					return err
				}
			}
			opts := f.opts
			if opts.Binary == "" {
				exe, err := os.Executable()
				if err != nil {
					return failed(fmt.Errorf("which binary is metal: %w (give --binary)", err))
				}
				opts.Binary = exe
			}
			if len(opts.Modules) == 0 {
				opts.Modules = append([]string(nil), initramfs.DefaultModules...)
			}
			opts.Modules, opts.Logger = append(opts.Modules, f.extraModules...), a.logger()
			res, err := initramfs.BuildAgent(cmd.Context(), opts)
			if err != nil {
				return failed(err)
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
	f.vars.Register(cmd.Flags())
	fl.StringVarP(&f.opts.Out, "out", "o", "", "write the initramfs (gzip'd cpio) to FILE")
	fl.StringVar(&f.opts.Binary, "binary", "", "the static metal binary to pack as /init (default: this one)")
	fl.StringVar(&f.opts.KernelDir, "kernel-dir", "", "a root holding boot/vmlinuz-REL and lib/modules/REL (default: this host's, else fetched)")
	fl.StringVar(&f.opts.KernelRelease, "kernel-release", "", "the kernel release to use when several are present")
	fl.StringVar(&f.opts.Package, "package", initramfs.DefaultPackage, "the Debian kernel package to fetch when no kernel is at hand")
	fl.StringVar(&f.opts.CacheDir, "cache-dir", initramfs.DefaultCacheDir, "where fetched kernel packages are kept")
	fl.StringArrayVar(&f.opts.Modules, "module", nil, "a kernel module to include, replacing the default list (repeatable)")
	fl.StringArrayVar(&f.extraModules, "extra-module", nil, "a kernel module to include besides the default list (repeatable)")
	fl.BoolVar(&f.json, "json", false, "print the result as JSON")
	return cmd
}
