package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/cmd/metal/internal/view"
	"github.com/metal-dev/metal/daemon/api"
	apiclient "github.com/metal-dev/metal/daemon/api/client"
	"github.com/metal-dev/metal/inventory"
)

// openTokens returns the token admin of the store: the store itself, or
// the running daemon that holds an embedded one, over its local socket.
// The token file of an older metal is moved into the store first.
func openTokens(ctx context.Context, a *app, f *arguments.Tokens) (api.TokenAdmin, func(), error) {
	url, err := f.Store(a.stderr)
	if err != nil {
		return nil, nil, err
	}
	return apiclient.TokenAdmin(ctx, url, a.logger())
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
	var f arguments.Tokens
	var role, name string
	var expires time.Duration
	cmd := &cobra.Command{
		Use:     "create [NAME]",
		Short:   "Create a token and print its secret (shown only once)",
		Example: helpText("token-create.examples"),
		Args:    cobra.MaximumNArgs(1),
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
			admin, done, err := openTokens(cmd.Context(), a, &f)
			if err != nil {
				return err
			}
			defer done()
			created, err := admin.Create(cmd.Context(), api.NewToken{Name: name, Role: r, TTL: expires})
			if err != nil {
				return err
			}
			view.TokenCreated(a.stdout, a.stderr, created)
			return nil
		},
	}
	f.Register(cmd.Flags())
	cmd.Flags().StringVar(&role, "role", "", "what the token may do: read, operate or admin (required)")
	cmd.Flags().StringVar(&name, "name", "", "the token's name, shown in lists and events (default: a random one)")
	cmd.Flags().DurationVar(&expires, "expires", 0, "how long the token works, e.g. 24h (default: until revoked)")
	_ = cmd.MarkFlagRequired("role")
	return cmd
}

func newTokenListCmd(a *app) *cobra.Command {
	var f arguments.Tokens
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List tokens: name, role, expiry, last use (secrets are never stored)",
		Example: `  metal token list --site site.hcl`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			admin, done, err := openTokens(cmd.Context(), a, &f)
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
				return view.JSON(a.stdout, api.TokenList{Tokens: list})
			}
			return view.Tokens(a.stdout, a.stderr, list, time.Now())
		},
	}
	f.Register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newTokenRevokeCmd(a *app) *cobra.Command {
	var f arguments.Tokens
	cmd := &cobra.Command{
		Use:     "revoke NAME...",
		Short:   "Revoke tokens: every request with them is refused from now on",
		Example: `  metal token revoke --site site.hcl alice`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			admin, done, err := openTokens(cmd.Context(), a, &f)
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
	f.Register(cmd.Flags())
	return cmd
}
