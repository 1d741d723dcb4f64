package ipmisim

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
)

// ServeLine is the serial cable between ipmi_sim's Serial-over-LAN and a
// machine whose serial port comes and goes with its power, as a QEMU's
// does: ipmi_sim connects to bmc once (its SOL device "tcp:" and bmc's
// address) and stays connected for good, and the machine connects to
// machine at each power on (QEMU's "-chardev socket,server=off"). What the
// machine prints goes to the BMC, what the BMC sends goes to the machine.
//
// ipmi_sim must never see its SOL device close. After a close it connects
// again only from its one SOL timer, and that timer is lost when the
// close comes while a SOL packet still awaits its ack: the retry cannot be
// started on the running timer, and the late ack then stops it (OpenIPMI
// 2.0.33, lanserv/sol.c). A QEMU that prints its last line and powers off
// at once leaves SOL dark for good whenever the SOL client acks late, as
// on a loaded host. A real BMC is wired to its machine's UART for good,
// and so ipmi_sim is to the line.
//
// As on a cable, bytes sent while the other end is not plugged in (the
// machine is off) go nowhere. A second connection on either end replaces
// the first. ServeLine returns when ctx
// ends, having closed both listeners and every connection.
func ServeLine(ctx context.Context, bmc, machine net.Listener, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &line{log: log, conns: map[net.Conn]bool{}}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
		}
		bmc.Close()
		machine.Close()
		l.closeAll()
	}()
	errs := make(chan error, 2)
	go func() { errs <- l.accept(ctx, bmc, l.bmcEnd) }()
	go func() { errs <- l.accept(ctx, machine, l.machineEnd) }()
	err := <-errs
	close(done)
	if err2 := <-errs; err == nil {
		err = err2
	}
	l.wg.Wait()
	return err
}

type line struct {
	log *slog.Logger
	wg  sync.WaitGroup

	mu      sync.Mutex
	bmc     net.Conn
	machine net.Conn
	conns   map[net.Conn]bool // open connections, closed at the end
	closed  bool
}

// accept hands each connection on ln to end until ln is closed.
func (l *line) accept(ctx context.Context, ln net.Listener, end func(net.Conn)) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("serial line: %w", err)
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			c.Close()
			return nil
		}
		l.conns[c] = true
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			end(c)
			l.mu.Lock()
			delete(l.conns, c)
			l.mu.Unlock()
			c.Close()
		}()
	}
}

func (l *line) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for c := range l.conns {
		c.Close()
	}
}

// bmcEnd is the BMC's connection: its keys go to the machine.
func (l *line) bmcEnd(c net.Conn) {
	l.plug(&l.bmc, c)
	l.log.Info("serial line: BMC connected")
	l.copy(c, &l.machine)
	l.unplug(&l.bmc, c)
	l.log.Info("serial line: BMC disconnected")
}

// machineEnd is the machine's connection, from its power on to its power
// off: its output goes to the BMC.
func (l *line) machineEnd(c net.Conn) {
	l.plug(&l.machine, c)
	l.log.Info("serial line: machine connected (powered on)")
	l.copy(c, &l.bmc)
	l.unplug(&l.machine, c)
	l.log.Info("serial line: machine disconnected (powered off)")
}

// plug makes c the line's end, in place of the one before.
func (l *line) plug(end *net.Conn, c net.Conn) {
	l.mu.Lock()
	old := *end
	*end = c
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

// unplug leaves the end empty if c is still on it.
func (l *line) unplug(end *net.Conn, c net.Conn) {
	l.mu.Lock()
	if *end == c {
		*end = nil
	}
	l.mu.Unlock()
}

// copy sends what from sends to the other end as it is at the time,
// dropping it while nothing is plugged in there, until from ends.
func (l *line) copy(from net.Conn, other *net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			l.mu.Lock()
			dst := *other
			l.mu.Unlock()
			if dst != nil {
				// An end that went away reads its close on its own side.
				_, _ = dst.Write(buf[:n])
			}
		}
		if err != nil {
			return
		}
	}
}
