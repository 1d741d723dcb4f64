package bmc

import (
	"context"
	"io"
	"log/slog"
)

// redactHandler scrubs secrets from every message and string attribute
// before they reach the real handler. bmclib and its providers log through
// it, so a provider that echoes a request never leaks the password.
type redactHandler struct {
	next slog.Handler
	r    redactor
}

func (h redactHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.scrub(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.scrubAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h redactHandler) scrubAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.scrub(v.String()))
	case slog.KindGroup:
		attrs := v.Group()
		scrubbed := make([]any, 0, len(attrs))
		for _, g := range attrs {
			scrubbed = append(scrubbed, h.scrubAttr(g))
		}
		return slog.Group(a.Key, scrubbed...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, h.r.scrub(err.Error()))
		}
		return slog.String(a.Key, h.r.scrub(v.String()))
	}
	return slog.Attr{Key: a.Key, Value: v}
}

func (h redactHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	scrubbed := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		scrubbed[i] = h.scrubAttr(a)
	}
	return redactHandler{next: h.next.WithAttrs(scrubbed), r: h.r}
}

func (h redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{next: h.next.WithGroup(name), r: h.r}
}

// LevelTrace is the log level of the Redfish requests and answers metal
// dumps for debugging (redacted, like every line this package logs).
const LevelTrace = slog.LevelDebug - 4

// dumpWriter returns a writer that logs each HTTP dump gofish writes at
// LevelTrace, or nil when that level is off.
func (c *Client) dumpWriter() io.Writer {
	if !c.log.Enabled(context.Background(), LevelTrace) {
		return nil
	}
	return dumpLog{c.log}
}

type dumpLog struct{ log *slog.Logger }

func (d dumpLog) Write(p []byte) (int, error) {
	d.log.Log(context.Background(), LevelTrace, "redfish http", "dump", string(p))
	return len(p), nil
}
