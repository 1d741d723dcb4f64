package main

import (
	"context"

	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/inventory"
)

// redactedReader shows machines read straight from the store as the API
// shows them (api.Redact): no boot token, task secret or user data, and
// nothing computed from a sensitive variable.
type redactedReader struct{ inventory.Reader }

func (r redactedReader) Machines(ctx context.Context) ([]inventory.Machine, error) {
	ms, err := r.Reader.Machines(ctx)
	for i := range ms {
		ms[i] = api.Redact(ms[i])
	}
	return ms, err
}

func (r redactedReader) Machine(ctx context.Context, ref string) (inventory.Machine, error) {
	m, err := r.Reader.Machine(ctx, ref)
	return api.Redact(m), err
}
