package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/metal-dev/metal/cmd/metal/internal/view"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/site"
)

// tokenFlags say where the token file is: in --state-dir, or in the state
// directory of --site's daemon.
type tokenFlags struct {
	site     siteFlag
	stateDir string
	vf       varFlags
}

func (f *tokenFlags) register(cmd *cobra.Command) {
	f.site.register(cmd.Flags())
	cmd.Flags().StringVar(&f.stateDir, "state-dir", "", "state directory holding the tokens (instead of --site)")
	f.vf.register(cmd)
}

func (f *tokenFlags) path(a *app) (string, error) {
	switch {
	case f.stateDir != "" && f.site.path != "":
		return "", &exitError{code: exitUsage, err: errors.New("give --site or --state-dir, not both")}
	case f.stateDir != "":
		return filepath.Join(f.stateDir, api.TokenFile), nil
	default:
		path := f.site.name()
		res, diags := f.vf.load(path)
		view.Diags(a.stderr, res.Files, diags)
		if diags.HasErrors() {
			return "", silentExit(exitFailed)
		}
		dir := site.DefaultStateDir(res.Site.Settings.State, filepath.Dir(path))
		return filepath.Join(dir, api.TokenFile), nil
	}
}

func newTokenCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create and list API tokens for the console and the JSON API",
		Long: `API tokens let people and scripts use metal serve's JSON API and log in to
its web console. Every request that changes something needs one; reads need
one too unless the daemon opens them.

Tokens are kept hashed (salted SHA-256) in the file api-tokens of the
daemon's state directory, one line per token; the secret is printed once,
when it is created. To revoke a token, delete its line. The daemon reads
the file again when it changes.`,
		Example: `  metal token create --site site.hcl alice
  metal token create --state-dir /var/lib/metal ci-pipeline
  metal token list --site site.hcl
  curl -H "Authorization: Bearer $TOKEN" http://metal:8080/api/v1/machines`,
	}
	var cf tokenFlags
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a token and print its secret (shown only once)",
		Example: `  metal token create --site site.hcl alice
  TOKEN=$(metal token create --state-dir .metal ci)`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := cf.path(a)
			if err != nil {
				return err
			}
			secret, err := api.AddToken(path, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, secret)
			fmt.Fprintf(a.stderr, "Created token %q in %s. Keep the secret above: it is not stored and cannot be shown again.\n", args[0], path)
			return nil
		},
	}
	cf.register(create)
	var lf tokenFlags
	list := &cobra.Command{
		Use:     "list",
		Short:   "List token names (secrets are never stored)",
		Example: `  metal token list --site site.hcl`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := lf.path(a)
			if err != nil {
				return err
			}
			names, err := api.OpenTokens(path).Names()
			if err != nil {
				return err
			}
			if len(names) == 0 {
				fmt.Fprintf(a.stderr, "No tokens in %s; create one with metal token create NAME.\n", path)
			}
			for _, n := range names {
				fmt.Fprintln(a.stdout, n)
			}
			return nil
		},
	}
	lf.register(list)
	cmd.AddCommand(create, list)
	return cmd
}
