package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/daemon/api"
	apiclient "github.com/metal-dev/metal/daemon/api/client"
	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/bolt"
)

// tokenFlags say which store's tokens a verb manages: the site's, --state,
// or the embedded store in --state-dir.
type tokenFlags struct {
	state    stateFlags
	stateDir string
}

func (f *tokenFlags) register(cmd *cobra.Command) {
	f.state.register(cmd, false)
	cmd.Flags().StringVar(&f.stateDir, "state-dir", "", "the state directory of an embedded store (file://DIR/state.db), instead of --site")
}

// open returns the token admin of the store: the store itself, or the
// running daemon that holds an embedded one, over its local socket. The
// token file of an older metal is moved into the store first.
func (f *tokenFlags) open(ctx context.Context, a *app) (api.TokenAdmin, func(), error) {
	if f.stateDir != "" {
		if f.state.state != "" || f.state.site.path != "" {
			return nil, nil, usageError("give --state-dir, or --site/--state, not both")
		}
		f.state.state = "file://" + filepath.Join(f.stateDir, "state.db")
	}
	st, err := f.state.resolve(a, false)
	if err != nil {
		return nil, nil, err
	}
	s, err := openState(ctx, a, st.State)
	if errors.Is(err, bolt.ErrLocked) {
		if c, ok := apiclient.Beside(st.State); ok {
			return c.Tokens(daemon.LocalTokensPath), func() {}, nil
		}
	}
	if err != nil {
		return nil, nil, err
	}
	if p, ok := strings.CutPrefix(st.State, "file://"); ok {
		if _, err := api.MigrateTokenFile(ctx, s, filepath.Join(filepath.Dir(p), api.TokenFile), a.logger()); err != nil {
			s.Close()
			return nil, nil, err
		}
	}
	return api.NewTokens(s, nil, a.logger()), func() { s.Close() }, nil
}

func newTokenCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "token",
		Short:   "Create, list and revoke API tokens for the console and the JSON API",
		Long:    helpText("token"),
		Example: helpText("token.examples"),
	}
	cmd.AddCommand(newTokenCreateCmd(a), newTokenListCmd(a), newTokenRevokeCmd(a))
	return cmd
}

func newTokenCreateCmd(a *app) *cobra.Command {
	var f tokenFlags
	var role, name string
	var expires time.Duration
	cmd := &cobra.Command{
		Use:   "create [NAME]",
		Short: "Create a token and print its secret (shown only once)",
		Example: `  metal token create --site site.hcl --role read --name grafana
  metal token create --state-dir /var/lib/metal --role operate --expires 24h ci`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if name != "" && name != args[0] {
					return usageError("give the name once: --name or NAME")
				}
				name = args[0]
			}
			r, err := api.ParseRole(role)
			if err != nil {
				return usageError("--role: %v", err)
			}
			if expires < 0 {
				return usageError("--expires must be positive (e.g. 24h)")
			}
			admin, done, err := f.open(cmd.Context(), a)
			if err != nil {
				return err
			}
			defer done()
			created, err := admin.Create(cmd.Context(), api.NewToken{Name: name, Role: r, TTL: expires})
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, created.Secret)
			until := "it does not expire"
			if !created.Token.Expires.IsZero() {
				until = "it expires at " + created.Token.Expires.Local().Format(time.RFC3339)
			}
			fmt.Fprintf(a.stderr, "Created token %q with role %s; %s. Keep the secret above: it is not stored and cannot be shown again.\n",
				created.Token.Name, created.Token.Role, until)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&role, "role", "", "what the token may do: read, operate or admin (required)")
	cmd.Flags().StringVar(&name, "name", "", "the token's name, shown in lists and events (default: a random one)")
	cmd.Flags().DurationVar(&expires, "expires", 0, "how long the token works, e.g. 24h (default: until revoked)")
	_ = cmd.MarkFlagRequired("role")
	return cmd
}

func newTokenListCmd(a *app) *cobra.Command {
	var f tokenFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List tokens: name, role, expiry, last use (secrets are never stored)",
		Example: `  metal token list --site site.hcl`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			admin, done, err := f.open(cmd.Context(), a)
			if err != nil {
				return err
			}
			defer done()
			list, err := admin.List(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if list == nil {
					list = []api.TokenInfo{}
				}
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(api.TokenList{Tokens: list})
			}
			if len(list) == 0 {
				fmt.Fprintln(a.stderr, "No tokens; create one with metal token create --role ROLE.")
				return nil
			}
			now := time.Now()
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tCREATED\tEXPIRES\tLAST USED")
			for _, t := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Name, t.Role, t.Created.Local().Format(time.DateTime),
					tokenExpiry(t.Expires, now), tokenLastUse(t.LastUsed, now))
			}
			return tw.Flush()
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func tokenExpiry(at, now time.Time) string {
	switch {
	case at.IsZero():
		return "never"
	case !now.Before(at):
		return "expired " + at.Local().Format(time.DateTime)
	}
	return at.Local().Format(time.DateTime)
}

func tokenLastUse(at, now time.Time) string {
	if at.IsZero() {
		return "never"
	}
	return at.Local().Format(time.DateTime) + " (" + now.Sub(at).Round(time.Minute).String() + " ago)"
}

func newTokenRevokeCmd(a *app) *cobra.Command {
	var f tokenFlags
	cmd := &cobra.Command{
		Use:     "revoke NAME...",
		Short:   "Revoke tokens: every request with them is refused from now on",
		Example: `  metal token revoke --site site.hcl alice`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			admin, done, err := f.open(cmd.Context(), a)
			if err != nil {
				return err
			}
			defer done()
			for _, name := range args {
				err := admin.Revoke(cmd.Context(), name)
				if errors.Is(err, inventory.ErrNotFound) {
					return fmt.Errorf("no token called %q (metal token list shows them)", name)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stderr, "Revoked token %q.\n", name)
			}
			return nil
		},
	}
	f.register(cmd)
	return cmd
}
