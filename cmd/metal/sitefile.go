package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/site"
)

// varFlags are the flags of every verb that loads a site file.
type varFlags struct {
	vars     []string
	varFiles []string
}

func (v *varFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&v.vars, "var", nil, "set a variable: -var NAME=VALUE (repeatable)")
	cmd.Flags().StringArrayVar(&v.varFiles, "var-file", nil, "read variables from an HCL file of NAME = VALUE lines (repeatable)")
}

// load reads and validates one site file with the variables from flags and
// the environment.
func (v *varFlags) load(path string) (*site.Result, hcl.Diagnostics) {
	return site.LoadFile(path, site.Options{Vars: v.vars, VarFiles: v.varFiles, Env: os.Environ()})
}

// loadedSite is where a served site came from, so the daemon can reload it
// when an apply is submitted for an edited file.
type loadedSite struct {
	path, digest string
	reload       func(context.Context) (*site.Site, string, error)
}

// siteSource describes the site file at path, loaded as res with vars.
func siteSource(path string, res *site.Result, vars varFlags) (loadedSite, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return loadedSite{}, err
	}
	return loadedSite{path: abs, digest: res.Digest(), reload: func(context.Context) (*site.Site, string, error) {
		again, diags := vars.load(abs)
		if diags.HasErrors() {
			return nil, "", fmt.Errorf("the site file has errors now (metal validate %s shows them): %s", path, diags.Error())
		}
		return again.Site, again.Digest(), nil
	}}, nil
}

// agentBootFlags name an install agent to boot instead of the one metal
// builds (serve and apply).
type agentBootFlags struct {
	kernel  string
	initrds []string
	cmdline string
}

func (f *agentBootFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.kernel, "agent-kernel", "", "kernel of the install agent, a path on metal's HTTP server or a URL (default: the agent metal builds)")
	fl.StringArrayVar(&f.initrds, "agent-initrd", nil, "initrd of the install agent (repeatable; with --agent-kernel)")
	fl.StringVar(&f.cmdline, "agent-cmdline", "", "kernel command line of the install agent (with --agent-kernel)")
}

// boot is the agent given, or nil to build one.
func (f *agentBootFlags) boot() *daemon.AgentBoot {
	if f.kernel == "" {
		return nil
	}
	return &daemon.AgentBoot{Kernel: f.kernel, Initrds: f.initrds, Cmdline: f.cmdline}
}

// etcSite is the site file of an installed metal (the Debian package's
// conffile).
const etcSite = "/etc/metal/site.hcl"

// siteFlag is --site FILE: the site file of every verb that works on a
// site, named and defaulted the same way everywhere.
type siteFlag struct{ path string }

func (f *siteFlag) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.path, "site", "", `the site file (default: $METAL_SITE, else ./site.hcl, else `+etcSite+`)`)
}

// file returns the site file: --site, else the positional FILE that plan,
// apply, serve and doctor still take (deprecated for --site), else
// defaultSiteFile.
func (f *siteFlag) file(args []string) (string, error) {
	switch {
	case len(args) > 0 && f.path != "" && args[0] != f.path:
		return "", usageError("two site files, --site %s and %s: name it once, with --site", f.path, args[0])
	case f.path != "":
		return f.path, nil
	case len(args) > 0:
		return args[0], nil
	}
	return defaultSiteFile(), nil
}

// name is the site file of a verb without a positional one.
func (f *siteFlag) name() string {
	if f.path != "" {
		return f.path
	}
	return defaultSiteFile()
}

// defaultSiteFile is $METAL_SITE, else ./site.hcl if it exists, else
// /etc/metal/site.hcl if it exists; else ./site.hcl, so that what is
// reported missing is the file in the working directory.
func defaultSiteFile() string {
	if p := os.Getenv("METAL_SITE"); p != "" {
		return p
	}
	for _, p := range []string{"site.hcl", etcSite} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "site.hcl"
}

// deprecatedFileArg is the line of a verb's help about its positional
// site file.
const deprecatedFileArg = `

The site file is --site FILE (default: $METAL_SITE, else ./site.hcl, else
` + etcSite + `). Naming it as the argument instead still works but is
deprecated.`
