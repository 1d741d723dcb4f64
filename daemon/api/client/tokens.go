package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/inventory"
)

// Tokens manages API tokens through the daemon's api.TokensHandler at
// base (daemon.LocalTokensPath on the local socket).
func (r *Client) Tokens(base string) api.TokenAdmin { return tokenClient{r, base} }

type tokenClient struct {
	c    *Client
	base string
}

func (t tokenClient) Create(ctx context.Context, req api.NewToken) (api.CreatedToken, error) {
	body := api.NewTokenRequest{Name: req.Name, Role: req.Role}
	if req.TTL > 0 {
		body.ExpiresIn = req.TTL.Round(time.Second).String()
	}
	var out api.CreatedToken
	err := t.do(ctx, http.MethodPost, t.base, body, &out)
	return out, err
}

func (t tokenClient) Revoke(ctx context.Context, name string) error {
	return t.do(ctx, http.MethodDelete, t.base+"/"+url.PathEscape(name), nil, nil)
}

func (t tokenClient) List(ctx context.Context) ([]api.TokenInfo, error) {
	var out api.TokenList
	err := t.do(ctx, http.MethodGet, t.base, nil, &out)
	return out.Tokens, err
}

func (t tokenClient) do(ctx context.Context, method, path string, in, out any) error {
	var body *bytes.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	} else {
		body = bytes.NewReader(nil)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://metal"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := t.c.client.Do(req)
	if err != nil {
		return fmt.Errorf("ask the running metal serve: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e api.Error
		_ = json.NewDecoder(resp.Body).Decode(&e)
		err := fmt.Errorf("metal serve answered %s: %s", resp.Status, e.Error)
		switch resp.StatusCode {
		case http.StatusNotFound:
			err = fmt.Errorf("%s: %w", e.Error, inventory.ErrNotFound)
		case http.StatusConflict:
			err = fmt.Errorf("%s: %w", e.Error, inventory.ErrConflict)
		}
		return err
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
