package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/metal-dev/metal/cmd/metal/internal/view"
	"github.com/metal-dev/metal/daemon"
	apiclient "github.com/metal-dev/metal/daemon/api/client"
	"github.com/metal-dev/metal/inventory"
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
	return site.LoadFile(path, v.options())
}

// loadSite loads the site file at path and prints its diagnostics; an
// error ends the verb, having been said.
func (v *varFlags) loadSite(a *app, path string) (*site.Result, error) {
	res, diags := v.load(path)
	view.Diags(a.stderr, res.Files, diags)
	if diags.HasErrors() {
		return nil, silentExit(exitFailed)
	}
	return res, nil
}

func (v *varFlags) options() site.Options {
	return site.Options{Vars: v.vars, VarFiles: v.varFiles, Env: os.Environ()}
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

// siteFlag is --site FILE: the site file of every verb that works on a
// site, named and defaulted the same way everywhere.
type siteFlag struct{ path string }

func (f *siteFlag) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.path, "site", "", `the site file (default: $METAL_SITE, else ./site.hcl, else `+site.EtcFile+`)`)
}

// file returns the site file: --site, else the positional FILE that plan,
// apply, serve and doctor still take (deprecated for --site), else
// site.DefaultFile.
func (f *siteFlag) file(args []string) (string, error) {
	switch {
	case len(args) > 0 && f.path != "" && args[0] != f.path:
		return "", usageError("two site files, --site %s and %s: name it once, with --site", f.path, args[0])
	case f.path != "":
		return f.path, nil
	case len(args) > 0:
		return args[0], nil
	}
	return site.DefaultFile(), nil
}

// name is the site file of a verb without a positional one.
func (f *siteFlag) name() string {
	if f.path != "" {
		return f.path
	}
	return site.DefaultFile()
}

// stateFlags say which state store a verb works on: the one the site file
// names, or --state.
type stateFlags struct {
	vars  varFlags
	site  siteFlag
	state string
}

func (f *stateFlags) register(cmd *cobra.Command, persistent bool) {
	fs := cmd.Flags()
	if persistent {
		fs = cmd.PersistentFlags()
	}
	f.site.register(fs)
	fs.StringVar(&f.state, "state", "", "the state store URL, instead of the site's (file://PATH, etcd://HOST:PORT/PREFIX)")
	fs.StringArrayVar(&f.vars.vars, "var", nil, "set a variable of the site file: -var NAME=VALUE (repeatable)")
	fs.StringArrayVar(&f.vars.varFiles, "var-file", nil, "read variables of the site file from an HCL file (repeatable)")
}

// siteState is what a verb learns from the site file: the site's name and
// its state URL, resolved against the file's directory.
type siteState struct {
	Name  string
	State string
	Site  *site.Site // nil when --state alone named the store
}

// resolve loads the site file (unless --state makes it unneeded and
// needSite is false) and returns the site's name and state URL.
func (f *stateFlags) resolve(a *app, needSite bool) (siteState, error) {
	var out siteState
	if f.state != "" && !needSite {
		out.State = f.state
		return out, nil
	}
	sitePath := f.site.name()
	res, diags := f.vars.load(sitePath)
	view.Diags(a.stderr, res.Files, diags)
	if diags.HasErrors() {
		if _, err := os.Stat(sitePath); errors.Is(err, os.ErrNotExist) {
			return out, usageError("site file %s not found: name it with --site FILE, or the store with --state URL", sitePath)
		}
		return out, silentExit(exitFailed)
	}
	out.Name, out.Site = res.Site.Name, res.Site
	out.State = site.ResolveState(res.Site.Settings.State, filepath.Dir(sitePath))
	if f.state != "" {
		out.State = f.state
	}
	return out, nil
}

// openReader opens the reader the read verbs use: the store, or the
// running metal serve that holds it.
func openReader(ctx context.Context, a *app, f *stateFlags) (inventory.Reader, error) {
	st, err := f.resolve(a, false)
	if err != nil {
		return nil, err
	}
	return apiclient.Reader(ctx, st.State, a.logger())
}
