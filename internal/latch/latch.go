// Package latch is a one-way signal: closed once, waited on by anyone.
// Servers use it to say that their sockets are bound, so the daemon can
// tell systemd it is ready only once every listener is up.
package latch

import "sync"

// Latch is open until Close; its zero value is ready to use.
type Latch struct {
	once sync.Once
	mu   sync.Mutex
	ch   chan struct{}
}

func (l *Latch) chan_() chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ch == nil {
		l.ch = make(chan struct{})
	}
	return l.ch
}

// Done is closed once Close was called.
func (l *Latch) Done() <-chan struct{} { return l.chan_() }

// Close closes Done; later calls do nothing.
func (l *Latch) Close() { l.once.Do(func() { close(l.chan_()) }) }
