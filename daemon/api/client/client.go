// Package client is a client of the daemon's JSON API (daemon/api) over
// its local Unix socket: how `metal machines`, `metal events` and a
// submitted `metal apply` see the store while `metal serve` holds it.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/inventory"
)

// Client reads the inventory through a running daemon's API.
type Client struct {
	client *http.Client
}

// New returns a client of the daemon whose local socket is sock.
func New(sock string) *Client { return &Client{client: HTTP(sock)} }

// HTTP is an HTTP client of the daemon's local socket at sock; its
// requests go to any host (http://metal/...).
func HTTP(sock string) *http.Client {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial}}
}

func (r *Client) get(ctx context.Context, path string, q url.Values, out any) error {
	u := "http://metal" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("ask the running metal serve: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return inventory.ErrNotFound
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("metal serve answered %s: %s", resp.Status, e.Error)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (r *Client) Machines(ctx context.Context) ([]inventory.Machine, error) {
	var l api.MachineList
	if err := r.get(ctx, api.Prefix+"machines", nil, &l); err != nil {
		return nil, err
	}
	return l.Machines, nil
}

// Machine finds ref by name, then by MAC.
func (r *Client) Machine(ctx context.Context, ref string) (inventory.Machine, error) {
	var m inventory.Machine
	err := r.get(ctx, api.Prefix+"machines/"+url.PathEscape(ref), nil, &m)
	if !errors.Is(err, inventory.ErrNotFound) {
		return m, err
	}
	mac, perr := inventory.NormalizeMAC(ref)
	if perr != nil {
		return m, err
	}
	ms, lerr := r.Machines(ctx)
	if lerr != nil {
		return m, lerr
	}
	for _, m := range ms {
		if m.MAC == mac {
			return m, nil
		}
	}
	return inventory.Machine{}, err
}

// Leases are not in the API: the table shows declared addresses only.
func (r *Client) Leases(context.Context) ([]inventory.Lease, error) { return nil, nil }

func (r *Client) Events(ctx context.Context, q inventory.EventQuery) ([]inventory.Event, error) {
	v := url.Values{}
	if q.Machine != "" {
		v.Set("machine", q.Machine)
	} else if q.MAC != "" {
		v.Set("machine", q.MAC)
	}
	if q.AfterSeq > 0 {
		v.Set("after", strconv.FormatInt(q.AfterSeq, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var l api.EventList
	if err := r.get(ctx, api.Prefix+"events", v, &l); err != nil {
		return nil, err
	}
	return l.Events, nil
}

// Follow polls for new events once a second.
func (r *Client) Follow(ctx context.Context, q inventory.EventQuery, fn func(inventory.Event) error) error {
	for {
		evs, err := r.Events(ctx, q)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for _, e := range evs {
			if err := fn(e); err != nil {
				return err
			}
			q.AfterSeq = e.Seq
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (r *Client) Close() error { r.client.CloseIdleConnections(); return nil }
