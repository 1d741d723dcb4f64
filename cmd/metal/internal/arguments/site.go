package arguments

import (
	"errors"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/pflag"

	"github.com/metal-dev/metal/cmd/metal/internal/view"
	"github.com/metal-dev/metal/site"
)

// Vars are -var and -var-file: the variables of the site file a verb loads.
type Vars struct {
	Vars     []string
	VarFiles []string
}

func (v *Vars) Register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&v.Vars, "var", nil, "set a variable: -var NAME=VALUE (repeatable)")
	fs.StringArrayVar(&v.VarFiles, "var-file", nil, "read variables from an HCL file of NAME = VALUE lines (repeatable)")
}

// Options are the loader's options: the variables and the environment.
func (v *Vars) Options() site.Options {
	return site.Options{Vars: v.Vars, VarFiles: v.VarFiles, Env: os.Environ()}
}

// Load reads and validates one site file.
func (v *Vars) Load(path string) (*site.Result, hcl.Diagnostics) {
	return site.LoadFile(path, v.Options())
}

// LoadSite loads the site file at path and prints its diagnostics on
// stderr; an error ends the verb, having been said.
func (v *Vars) LoadSite(stderr io.Writer, path string) (*site.Result, error) {
	res, diags := v.Load(path)
	view.Diags(stderr, res.Files, diags)
	if diags.HasErrors() {
		return nil, Silent(ExitFailed)
	}
	return res, nil
}

// Site is --site FILE and its variables: the site file of every verb that
// works on a site, named and defaulted the same way everywhere.
type Site struct {
	Path string
	Vars Vars
}

func (f *Site) Register(fs *pflag.FlagSet) {
	fs.StringVar(&f.Path, "site", "", `the site file (default: $METAL_SITE, else ./site.hcl, else `+site.EtcFile+`)`)
	f.Vars.Register(fs)
}

// Load loads the site file that File names and prints its diagnostics on
// stderr; an error ends the verb, having been said.
func (f *Site) Load(stderr io.Writer, args []string) (*site.Result, string, error) {
	path, err := f.File(args)
	if err != nil {
		return nil, "", err
	}
	res, err := f.Vars.LoadSite(stderr, path)
	return res, path, err
}

// File returns the site file: --site, else the positional FILE that plan,
// apply, serve and doctor still take (deprecated for --site), else
// site.DefaultFile.
func (f *Site) File(args []string) (string, error) {
	switch {
	case len(args) > 0 && f.Path != "" && args[0] != f.Path:
		return "", Usage("two site files, --site %s and %s: name it once, with --site", f.Path, args[0])
	case f.Path != "":
		return f.Path, nil
	case len(args) > 0:
		return args[0], nil
	}
	return site.DefaultFile(), nil
}

// Name is the site file of a verb without a positional one.
func (f *Site) Name() string {
	if f.Path != "" {
		return f.Path
	}
	return site.DefaultFile()
}

// State says which state store a verb works on: the one the site file
// names, or --state.
type State struct {
	Site Site
	URL  string
}

func (f *State) Register(fs *pflag.FlagSet) {
	f.Site.Register(fs)
	fs.StringVar(&f.URL, "state", "", "the state store URL, instead of the site's (file://PATH, etcd://HOST:PORT/PREFIX)")
}

// SiteState is what a verb learns from the site file: the site's name and
// its state URL, resolved against the file's directory.
type SiteState struct {
	Name  string
	State string
	Site  *site.Site // nil when --state alone named the store
}

// Resolve loads the site file (unless --state makes it unneeded and
// needSite is false), printing its diagnostics on stderr, and returns the
// site's name and state URL.
func (f *State) Resolve(stderr io.Writer, needSite bool) (SiteState, error) {
	var out SiteState
	if f.URL != "" && !needSite {
		out.State = f.URL
		return out, nil
	}
	sitePath := f.Site.Name()
	res, diags := f.Site.Vars.Load(sitePath)
	view.Diags(stderr, res.Files, diags)
	if diags.HasErrors() {
		if _, err := os.Stat(sitePath); errors.Is(err, os.ErrNotExist) {
			return out, Usage("site file %s not found: name it with --site FILE, or the store with --state URL", sitePath)
		}
		return out, Silent(ExitFailed)
	}
	out.Name, out.Site = res.Site.Name, res.Site
	out.State = site.ResolveState(res.Site.Settings.State, filepath.Dir(sitePath))
	if f.URL != "" {
		out.State = f.URL
	}
	return out, nil
}

// Tokens say which store's tokens the token verbs manage: the site's,
// --state, or the embedded store in --state-dir.
type Tokens struct {
	State    State
	StateDir string
}

func (f *Tokens) Register(fs *pflag.FlagSet) {
	f.State.Register(fs)
	fs.StringVar(&f.StateDir, "state-dir", "", "the state directory of an embedded store (file://DIR/state.db), instead of --site")
}

// Store is the URL of that store (State.Resolve prints on stderr).
func (f *Tokens) Store(stderr io.Writer) (string, error) {
	if f.StateDir != "" {
		if f.State.URL != "" || f.State.Site.Path != "" {
			return "", Usage("give --state-dir, or --site/--state, not both")
		}
		f.State.URL = "file://" + filepath.Join(f.StateDir, "state.db")
	}
	st, err := f.State.Resolve(stderr, false)
	return st.State, err
}
