package agentapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// ErrStaleTask is returned by Client.Status when metal no longer considers
// the reported task current (the engine gave the machine a new one).
var ErrStaleTask = errors.New("task is no longer current")

// Client is what the agent uses to talk to metal.
type Client struct {
	// BaseURL is metal's HTTP server ("http://192.0.2.1:8080"), from the
	// kernel command line's metal.url.
	BaseURL string
	// MAC is the machine's boot MAC.
	MAC net.HardwareAddr
	// Token, when set, is sent in TokenHeader.
	Token string
	// HTTP defaults to http.DefaultClient.
	HTTP *http.Client
}

func (c *Client) url(verb string) string {
	return strings.TrimRight(c.BaseURL, "/") + Prefix + "v1/" + c.MAC.String() + "/" + verb
}

// Facts reports the machine's hardware.
func (c *Client) Facts(ctx context.Context, hw Hardware) error {
	return c.do(ctx, http.MethodPost, "facts", hw, nil)
}

// Task asks for the machine's current task.
func (c *Client) Task(ctx context.Context) (TaskResponse, error) {
	var resp TaskResponse
	err := c.do(ctx, http.MethodGet, "task", nil, &resp)
	return resp, err
}

// Status reports progress or the result of a task.
func (c *Client) Status(ctx context.Context, st Status) error {
	return c.do(ctx, http.MethodPost, "status", st, nil)
}

func (c *Client) do(ctx context.Context, method, verb string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("agent %s: %w", verb, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(verb), body)
	if err != nil {
		return fmt.Errorf("agent %s: %w", verb, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set(TokenHeader, c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("agent %s: %w", verb, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		err := fmt.Errorf("agent %s: %s: %s", verb, resp.Status, bytes.TrimSpace(msg))
		if resp.StatusCode == http.StatusConflict {
			err = fmt.Errorf("%w: %w", ErrStaleTask, err)
		}
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxFactsBytes)).Decode(out); err != nil {
		return fmt.Errorf("agent %s: answer: %w", verb, err)
	}
	return nil
}
