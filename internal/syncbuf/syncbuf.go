// Package syncbuf is a bytes.Buffer that many goroutines may write while
// another reads it: the shared log of servers and child processes that a
// test prints when it fails.
package syncbuf

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
)

// Buffer is safe for concurrent Write and String. The zero value is
// empty and ready.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Records reads what was written as JSON lines (slog's JSON handler) and
// returns those match accepts, in order; lines that are not a JSON object
// are skipped.
func (b *Buffer) Records(match func(map[string]any) bool) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && match(m) {
			out = append(out, m)
		}
	}
	return out
}
