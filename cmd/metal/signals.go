package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// interruptible is ctx until Ctrl-C or SIGTERM, so that a verb that runs
// until stopped, or for long, ends through its own cleanup.
func interruptible(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// onInterrupt calls drain on the first Ctrl-C (or SIGTERM) and abandon on
// the second; the returned func stops listening.
func onInterrupt(a *app, drain, abandon func()) (stop func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		n := 0
		for range sigs {
			n++
			if n == 1 {
				drain()
				fmt.Fprintln(a.stderr, "\nStopping: no more machines start; those in flight finish. Ctrl-C again abandons them (metal apply --resume continues).")
				continue
			}
			abandon()
			return
		}
	}()
	return func() { signal.Stop(sigs) }
}
