package virtual

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// qmp is one connection to a QEMU Machine Protocol socket. QEMU serves one
// QMP client per socket at a time, so the virtual BMC dials for each
// operation and closes afterwards rather than holding a connection that
// would go stale whenever the VM restarts.
type qmp struct {
	conn net.Conn
	rd   *bufio.Reader
	enc  *json.Encoder
	id   int
}

// qmpError is an error QEMU returned for a command.
type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *qmpError) Error() string { return fmt.Sprintf("qemu: %s: %s", e.Class, e.Desc) }

// dialQMP connects to the socket at path and negotiates capabilities.
func dialQMP(ctx context.Context, path string) (*qmp, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("dial qmp %s: %w", path, err)
	}
	q := &qmp{conn: conn, rd: bufio.NewReader(conn), enc: json.NewEncoder(conn)}
	q.deadline(ctx)
	var greeting struct {
		QMP *json.RawMessage `json:"QMP"`
	}
	line, err := q.rd.ReadBytes('\n')
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("read qmp greeting: %w", err)
	}
	if err := json.Unmarshal(line, &greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp greeting from %s is not QMP: %q", path, line)
	}
	if err := q.execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp capabilities: %w", err)
	}
	return q, nil
}

func (q *qmp) deadline(ctx context.Context) {
	if dl, ok := ctx.Deadline(); ok {
		_ = q.conn.SetDeadline(dl)
	} else {
		_ = q.conn.SetDeadline(time.Now().Add(30 * time.Second))
	}
}

func (q *qmp) Close() error { return q.conn.Close() }

// execute runs cmd with args and decodes its return value into out (which
// may be nil). Asynchronous events interleaved with the reply are skipped.
func (q *qmp) execute(ctx context.Context, cmd string, args any, out any) error {
	q.deadline(ctx)
	q.id++
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        int    `json:"id"`
	}{cmd, args, q.id}
	if err := q.enc.Encode(req); err != nil {
		return fmt.Errorf("send %s: %w", cmd, err)
	}
	for {
		line, err := q.rd.ReadBytes('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && cmd == "quit" {
				// QEMU may close the socket before answering quit.
				return nil
			}
			return fmt.Errorf("read reply to %s: %w", cmd, err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *qmpError       `json:"error"`
			Event  string          `json:"event"`
			ID     *int            `json:"id"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return fmt.Errorf("decode reply to %s: %w", cmd, err)
		}
		if resp.Event != "" || (resp.ID != nil && *resp.ID != q.id) {
			continue
		}
		if resp.Error != nil {
			return resp.Error
		}
		if out != nil && resp.Return != nil {
			if err := json.Unmarshal(resp.Return, out); err != nil {
				return fmt.Errorf("decode %s result: %w", cmd, err)
			}
		}
		return nil
	}
}

// qmpStatus is the result of query-status.
type qmpStatus struct {
	Running bool   `json:"running"`
	Status  string `json:"status"`
}
