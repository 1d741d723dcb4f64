package view

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/metal-dev/metal/daemon/api"
)

// TokenCreated prints the new token's secret on out, alone on its line for
// scripts, and what it is on errw.
func TokenCreated(out, errw io.Writer, created api.CreatedToken) {
	fmt.Fprintln(out, created.Secret)
	until := "it does not expire"
	if !created.Token.Expires.IsZero() {
		until = "it expires at " + created.Token.Expires.Local().Format(time.RFC3339)
	}
	fmt.Fprintf(errw, "Created token %q with role %s; %s. Keep the secret above: it is not stored and cannot be shown again.\n",
		created.Token.Name, created.Token.Role, until)
}

// Tokens lists tokens as a table on out, or says on errw that there are
// none.
func Tokens(out, errw io.Writer, list []api.TokenInfo, now time.Time) error {
	if len(list) == 0 {
		fmt.Fprintln(errw, "No tokens; create one with metal token create --role ROLE.")
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tCREATED\tEXPIRES\tLAST USED")
	for _, t := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Name, t.Role, t.Created.Local().Format(time.DateTime),
			tokenExpiry(t.Expires, now), tokenLastUse(t.LastUsed, now))
	}
	return tw.Flush()
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
