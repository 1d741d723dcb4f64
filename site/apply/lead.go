package apply

import (
	"context"
	"fmt"
	"time"

	"github.com/metal-dev/metal/inventory"
)

// Lead makes sure one apply at a time changes a site's machines: with
// etcd, several metal servers and operators share one store, and the
// store's election picks who applies. It waits while another apply leads,
// calling waiting once first so the caller can say so. release gives
// leadership up; lost is closed if it is lost meanwhile (the store's
// session ended), after which the caller must stop changing machines.
func Lead(ctx context.Context, store inventory.Store, waiting func()) (release func(), lost <-chan struct{}, err error) {
	el, err := store.Election("apply")
	if err != nil {
		return nil, nil, fmt.Errorf("apply leadership: %w", err)
	}
	quick, cancel := context.WithTimeout(ctx, 2*time.Second)
	err = el.Campaign(quick)
	cancel()
	if err != nil && ctx.Err() == nil {
		if waiting != nil {
			waiting()
		}
		err = el.Campaign(ctx)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("apply leadership: %w", err)
	}
	return func() { _ = el.Resign(context.WithoutCancel(ctx)) }, el.Done(), nil
}
