package main

import (
	"context"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	apiclient "github.com/metal-dev/metal/daemon/api/client"
	"github.com/metal-dev/metal/inventory"
)

// openReader opens the reader the read verbs use: the store, or the
// running metal serve that holds it.
func openReader(ctx context.Context, a *app, f *arguments.State) (inventory.Reader, error) {
	st, err := f.Resolve(a.stderr, false)
	if err != nil {
		return nil, err
	}
	return apiclient.Reader(ctx, st.State, a.logger())
}
