package console

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/daemon/internal/sse"
	"github.com/metal-dev/metal/inventory"
)

// heartbeat keeps an idle stream open through proxies.
const heartbeat = 15 * time.Second

// stream keeps a page live: it sends the page's live part, rendered by the
// same template as the page, now and after each change in the store (at
// most once per Debounce). The script swaps it in; without script the page
// is simply as of its loading.
func (c *console) stream(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	fragment, err := c.fragment(q)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	changes, err := c.opts.Store.Watch(ctx, inventory.WatchOptions{})
	if err != nil {
		http.Error(w, "watch the store: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	st := sse.Start(w)

	var sent []byte
	send := func() bool {
		html, err := fragment(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			c.log.Warn("console stream render", "view", q.Get("view"), "err", err)
			return st.Send("", "problem", err.Error()) == nil
		}
		if bytes.Equal(html, sent) {
			return true // nothing this view shows has changed
		}
		sent = html
		return st.Send("", "html", string(html)) == nil
	}
	if !send() {
		return
	}
	beat := time.NewTicker(heartbeat)
	defer beat.Stop()
	var due <-chan time.Time // set while a re-render is pending
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			if st.KeepAlive() != nil {
				return
			}
		case ch, ok := <-changes:
			if !ok {
				return
			}
			if ch.Err != nil {
				// The browser's EventSource reconnects, and the
				// first message of the new stream is a full render.
				c.log.Info("console stream watch ended", "err", ch.Err)
				return
			}
			if due == nil {
				due = time.After(c.opts.Debounce)
			}
		case <-due:
			due = nil
			if !send() {
				return
			}
		}
	}
}

// fragment returns the renderer of the live part of the view q names.
func (c *console) fragment(q url.Values) (func(context.Context) ([]byte, error), error) {
	exec := func(name string, data any) ([]byte, error) {
		var buf bytes.Buffer
		err := c.tmpl.ExecuteTemplate(&buf, name, page{Prefix: Prefix, Data: data})
		return buf.Bytes(), err
	}
	switch q.Get("view") {
	case "machines":
		if _, err := api.ParseFilter(q); err != nil {
			return nil, err
		}
		return func(ctx context.Context) ([]byte, error) {
			v, err := c.machinesView(ctx, q)
			if err != nil {
				return nil, err
			}
			return exec("machine-rows", v)
		}, nil
	case "machine":
		name := q.Get("name")
		return func(ctx context.Context) ([]byte, error) {
			v, err := c.machineView(ctx, name)
			if err != nil {
				return nil, err
			}
			return exec("machine-live", v)
		}, nil
	case "racks":
		return func(ctx context.Context) ([]byte, error) {
			v, err := c.racksView(ctx)
			if err != nil {
				return nil, err
			}
			return exec("racks-live", v)
		}, nil
	case "rollout":
		id := q.Get("run")
		return func(ctx context.Context) ([]byte, error) {
			v, err := c.rolloutView(ctx, id)
			if err != nil {
				return nil, err
			}
			return exec("rollout-live", v)
		}, nil
	}
	return nil, errors.New("view: want machines, machine, racks or rollout")
}
