package serial

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Log is a machine's console log: what it printed, in a file of bounded
// size. When the file would pass max it becomes path+".1" (dropping the
// one before), so a machine's log never takes more than twice max.
type Log struct {
	path string
	max  int64
	f    *os.File
	size int64
}

// OpenLog appends to the console log at path, creating its directory.
func OpenLog(path string, max int64) (*Log, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("console log: %w", err)
	}
	l := &Log{path: path, max: max}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Log) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("console log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("console log: %w", err)
	}
	l.f, l.size = f, st.Size()
	return nil
}

// Write appends p, rotating the file first when p would take it past max.
func (l *Log) Write(p []byte) (int, error) {
	if l.size > 0 && l.size+int64(len(p)) > l.max {
		l.f.Close()
		if err := os.Rename(l.path, l.path+".1"); err != nil {
			return 0, fmt.Errorf("console log: rotate: %w", err)
		}
		if err := l.open(); err != nil {
			return 0, err
		}
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("console log: %w", err)
	}
	return n, nil
}

// Close closes the file.
func (l *Log) Close() error { return l.f.Close() }

// LogPath is where dir keeps machine's console log.
func LogPath(dir, machine string) string { return filepath.Join(dir, machine+".log") }

// Tail returns the last n lines of the console log at path (reaching into
// the rotated file when the current one holds fewer), carriage returns
// and other control characters but tabs removed; nil when there is no log.
func Tail(path string, n int) ([]string, error) {
	var data []byte
	for _, p := range []string{path + ".1", path} {
		b, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("console log: %w", err)
		}
		data = append(data, b...)
	}
	data = bytes.TrimRight(data, "\r\n")
	if len(data) == 0 {
		return nil, nil
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, s := range lines {
		lines[i] = strings.Map(func(r rune) rune {
			if r == '\t' || r >= ' ' && r != 0x7f {
				return r
			}
			return -1
		}, s)
	}
	return lines, nil
}

// Keep holds machine's console open in the hub until ctx ends, writing
// what it prints to w: the console's sessions share that stream, and a
// stream that ends (the BMC dropped it, the machine powered off, someone
// else holds its only SOL session) is opened again after a pause that
// doubles up to maxWait. keep says whether the machine still has a
// console to hold; Keep returns once it says no.
func (h *Hub) Keep(ctx context.Context, machine string, w io.Writer, keep func() bool, maxWait time.Duration, log *slog.Logger) {
	const firstWait = time.Second
	wait := firstWait
	for ctx.Err() == nil && keep() {
		s, err := h.Attach(ctx, machine)
		if err == nil {
			held := time.Now()
			drain(ctx, s, w)
			s.Close()
			err = s.Err()
			if time.Since(held) > maxWait {
				wait = firstWait
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			log.Debug("console not held; trying again", "machine", machine, "in", wait, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, maxWait)
	}
}

// drain writes a session's output to w until the stream or ctx ends.
func drain(ctx context.Context, s *Session, w io.Writer) {
	for {
		select {
		case <-ctx.Done():
			return
		case b, ok := <-s.Output():
			if !ok {
				return
			}
			// A full disk loses log lines, not the console.
			_, _ = w.Write(b)
		}
	}
}
