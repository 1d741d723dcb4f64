package apply

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/metal-dev/metal/inventory"
)

// watcher is one store watch shared by every wait of a run: it wakes the
// waiters of a machine when its record or one of its events changes. The
// waits also poll, so a broken watch only slows them down.
type watcher struct {
	store inventory.Store
	log   *slog.Logger

	mu   sync.Mutex
	subs map[string]map[chan struct{}]bool
}

func newWatcher(store inventory.Store, log *slog.Logger) *watcher {
	return &watcher{store: store, log: log, subs: map[string]map[chan struct{}]bool{}}
}

// subscribe returns a channel that receives (without blocking the watcher)
// after each change of machine name.
func (w *watcher) subscribe(name string) chan struct{} {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.subs[name] == nil {
		w.subs[name] = map[chan struct{}]bool{}
	}
	w.subs[name][ch] = true
	return ch
}

func (w *watcher) unsubscribe(name string, ch chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.subs[name], ch)
	if len(w.subs[name]) == 0 {
		delete(w.subs, name)
	}
}

func (w *watcher) notify(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.subs[name] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (w *watcher) notifyAll() {
	w.mu.Lock()
	names := make([]string, 0, len(w.subs))
	for n := range w.subs {
		names = append(names, n)
	}
	w.mu.Unlock()
	for _, n := range names {
		w.notify(n)
	}
}

// run watches until ctx ends, watching again after a break.
func (w *watcher) run(ctx context.Context) {
	for ctx.Err() == nil {
		ch, err := w.store.Watch(ctx, inventory.WatchOptions{Kinds: []inventory.Kind{inventory.KindMachine, inventory.KindEvent}})
		if err != nil {
			w.log.Warn("watch the store (waits fall back to polling)", "err", err)
		} else {
			for c := range ch {
				switch {
				case c.Err != nil:
					w.log.Debug("store watch broke; watching again", "err", c.Err)
				case c.Machine != nil:
					w.notify(c.Machine.Name)
				case c.Event != nil && c.Event.Machine != "":
					w.notify(c.Event.Machine)
				}
				if c.Err != nil {
					break
				}
			}
			// Whatever happened while not watching is read by the waits
			// themselves: wake them all.
			w.notifyAll()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
