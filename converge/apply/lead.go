package apply

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/metal-dev/metal/inventory"
)

// Lead makes sure one apply at a time changes a site's machines: with
// etcd, several metal servers and operators share one store, and the
// store's election picks who applies. It waits while another apply leads,
// calling waiting once first so the caller can say so. release gives
// leadership up. lost is called if leadership is lost before release (the
// store's session ended), after which the caller must stop changing
// machines; giving it up with release is never taken for losing it.
func Lead(ctx context.Context, store inventory.Store, waiting, lost func()) (release func(), err error) {
	el, err := store.Election("apply")
	if err != nil {
		return nil, fmt.Errorf("apply leadership: %w", err)
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
		return nil, fmt.Errorf("apply leadership: %w", err)
	}
	released := make(chan struct{})
	go func() {
		select {
		case <-el.Done():
			select {
			case <-released:
				return
			default:
			}
			if lost != nil {
				lost()
			}
		case <-released:
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			// Closed first, so the session ending on Resign is not lost.
			close(released)
			_ = el.Resign(context.WithoutCancel(ctx))
		})
	}, nil
}
