// Package sse writes server-sent event streams (text/event-stream): the
// API's event feed and the console's live pages share it.
package sse

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// Stream is one server-sent event response.
type Stream struct {
	w  io.Writer
	rc *http.ResponseController
}

// Start answers the request with an event stream: headers a browser's
// EventSource and proxies need, and the status. Send what follows with
// Event, then Flush.
func Start(w http.ResponseWriter) *Stream {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // a buffering proxy would hold events back
	w.WriteHeader(http.StatusOK)
	return &Stream{w: w, rc: http.NewResponseController(w)}
}

// Event writes one event (not yet flushed); see Write.
func (s *Stream) Event(id, event string, v any) error { return Write(s.w, id, event, v) }

// Flush sends what was written to the client.
func (s *Stream) Flush() error { return s.rc.Flush() }

// Send writes one event and flushes it.
func (s *Stream) Send(id, event string, v any) error {
	if err := s.Event(id, event, v); err != nil {
		return err
	}
	return s.Flush()
}

// KeepAlive sends a comment, so proxies keep an idle stream open.
func (s *Stream) KeepAlive() error {
	if _, err := io.WriteString(s.w, ": keep-alive\n\n"); err != nil {
		return err
	}
	return s.Flush()
}

// Write writes one server-sent event whose data is v as JSON (a string v
// is sent as is, line by line); id and event are left out when empty.
func Write(w io.Writer, id, event string, v any) error {
	var data string
	if s, ok := v.(string); ok {
		data = s
	} else {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		data = string(b)
	}
	var b strings.Builder
	if id != "" {
		b.WriteString("id: " + id + "\n")
	}
	if event != "" {
		b.WriteString("event: " + event + "\n")
	}
	for _, line := range strings.Split(data, "\n") {
		b.WriteString("data: " + strings.TrimSuffix(line, "\r") + "\n")
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}
