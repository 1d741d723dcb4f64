package tftp

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// eventLoop drives every transfer of a window socket (lockstep ones too)
// from one goroutine, as a rack booting at once asks: one epoll_wait returns every
// transfer socket with an ACK waiting, and each ACK is answered right
// there with the next block. The kernel wakes one thread per batch of
// ACKs, not one per ACK: a thread per transfer sleeping in its socket's
// receive made 200 transfers 200 threads, each needing a CPU of the
// runtime's (a P) on every wake-up and taking it from whatever ran there;
// through the runtime's poller instead an ACK waited for the next network
// poll, which a busy process makes about every 10 ms. One loop, not one
// per P: while its transfers' ACKs keep coming a loop holds its P (see
// run), and a loop per P would hold every P, starving DHCP and HTTP.
type eventLoop struct {
	epfd int
	// wake is an eventfd, written when a transfer is added or the loop is
	// told to stop.
	wake int

	mu sync.Mutex
	// added are transfers begun, for the loop to take; waiting counts
	// those announced (pending) and not yet added.
	added   []*windowTransfer
	waiting int
	stop    bool
}

func newEventLoop() (*eventLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll add: %w", err)
	}
	return &eventLoop{epfd: epfd, wake: wake}, nil
}

// pending announces a transfer that will be added: the loop does not
// stop before it is.
func (l *eventLoop) pending() {
	l.mu.Lock()
	l.waiting++
	l.mu.Unlock()
}

// add hands t, begun (or already ended), to the loop, which from now on
// drives it and closes its socket when it ends.
func (l *eventLoop) add(t *windowTransfer) {
	l.mu.Lock()
	l.added = append(l.added, t)
	l.waiting--
	l.mu.Unlock()
	l.poke()
}

// close tells the loop to return once its transfers have ended.
func (l *eventLoop) close() {
	l.mu.Lock()
	l.stop = true
	l.mu.Unlock()
	l.poke()
}

func (l *eventLoop) poke() {
	one := [8]byte{1}
	_, _ = unix.Write(l.wake, one[:])
}

// release closes the loop's descriptors, once run has returned (or was
// never called) and no one calls close any more.
func (l *eventLoop) release() {
	unix.Close(l.epfd)
	unix.Close(l.wake)
}

// run serves transfers until close, and then until the last has ended.
// req, if not nil, is the socket read requests come in on: the loop
// starts their transfers (on goroutines of their own: opening a file may
// wait on the disk or a generator) until close, and then closes it.
func (l *eventLoop) run(req *requestSocket) {
	live := map[int32]*windowTransfer{}
	events := make([]unix.EpollEvent, 256)
	var drain [8]byte
	if req != nil {
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, req.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(req.fd)}); err != nil {
			// With the window socket closed, the steering program's
			// answer names no socket and pin/tftp serves every request.
			req.log.Error("tftp windowsize disabled", "err", fmt.Errorf("epoll add: %w", err))
			req.close()
			req = nil
		}
	}
	// next is no later than the earliest deadline of a live transfer.
	var next time.Time
	idle, lone := 0, 0
	for {
		l.mu.Lock()
		added, stop, waiting := l.added, l.stop, l.waiting
		l.added = nil
		l.mu.Unlock()
		if stop && req != nil {
			_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, req.fd, nil)
			req.close()
			req = nil
		}
		for _, t := range added {
			if t.done {
				t.conn.close()
				continue
			}
			fd := int32(t.conn.fd)
			if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, int(fd), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: fd}); err != nil {
				t.finish(fmt.Errorf("epoll add: %w", err))
				t.conn.close()
				continue
			}
			live[fd] = t
			if next.IsZero() || t.deadline.Before(next) {
				next = t.deadline
			}
		}
		if stop && waiting == 0 && len(live) == 0 {
			return
		}
		// While transfers are in flight and their ACKs keep coming, the
		// loop waits holding its P: a wait the runtime knows of gives the
		// P away after 20 µs, and every wake-up then queues the loop
		// behind the goroutines that took it (a storm's DHCP and HTTP)
		// before the next block goes out, for every round trip of every
		// transfer. The runtime has a P more for it (reserveP).
		held := len(live) > 0 && idle < idleWaits
		if held && len(live) == 1 && waiting == 0 && (req == nil || lone < loneSteps) {
			// A lone transfer (one client, or a storm's last) waits for
			// its ACK in its socket's receive: a system call less per
			// round trip than epoll_wait and then recvfrom. The socket's
			// receive timeout (heldWait) bounds the wait: a transfer
			// added meanwhile, or a stop, is seen after it. Not while
			// another is being begun: its first ACK may come sooner.
			// A request is seen at the next epoll_wait, after loneSteps
			// such waits at most.
			lone++
			for _, t := range live {
				if l.step(t, true) {
					idle = 0
				} else {
					idle++
				}
				if t.done {
					l.remove(live, t)
					next = time.Time{}
				} else {
					next = t.deadline
				}
			}
		} else {
			lone = 0
			n, err := l.wait(events, held, next, time.Now())
			if n > 0 {
				idle = 0
			} else {
				idle++
			}
			if err != nil && !errors.Is(err, unix.EINTR) {
				// Not expected of a valid epoll descriptor; the transfers
				// still end by their deadlines.
				time.Sleep(time.Millisecond)
			}
			for _, ev := range events[:max(n, 0)] {
				if int(ev.Fd) == l.wake {
					_, _ = unix.Read(l.wake, drain[:])
					continue
				}
				if req != nil && int(ev.Fd) == req.fd {
					req.readAll()
					continue
				}
				t := live[ev.Fd]
				if t == nil {
					continue
				}
				l.step(t, false)
				if t.done {
					l.remove(live, t)
					continue
				}
				if t.deadline.Before(next) || next.IsZero() {
					next = t.deadline
				}
			}
		}
		// Expired only after the datagrams that came are read: under load
		// the loop may wake past a deadline with the awaited ACK waiting,
		// and a resent OACK makes some clients (atftp) abort.
		if now := time.Now(); !next.IsZero() && !now.Before(next) {
			next = l.sweep(live, now)
		}
	}
}

// step reads one datagram of t's socket and answers it; wait says to
// wait for one (heldWait at most), and step returns whether one came.
// One only: with lockstep clients that is all there is, and a second
// read would cost a system call to learn so; anything more is still
// readable at the next wait. A panic ends t alone.
func (l *eventLoop) step(t *windowTransfer, wait bool) (got bool) {
	defer t.recoverPanic()
	n, from, err := t.conn.recv(t.rcv, wait)
	switch {
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
		return false
	case err != nil:
		t.finish(fmt.Errorf("receive: %w", err))
	default:
		t.datagram(n, from)
	}
	return true
}

// sweep expires the transfers whose deadline has passed, drops those
// that have ended, and returns the earliest deadline left (zero if none).
func (l *eventLoop) sweep(live map[int32]*windowTransfer, now time.Time) time.Time {
	var next time.Time
	for _, t := range live {
		if !now.Before(t.deadline) {
			func() {
				defer t.recoverPanic()
				t.expire()
			}()
		}
		if t.done {
			l.remove(live, t)
			continue
		}
		if next.IsZero() || t.deadline.Before(next) {
			next = t.deadline
		}
	}
	return next
}

func (l *eventLoop) remove(live map[int32]*windowTransfer, t *windowTransfer) {
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, t.conn.fd, nil)
	delete(live, int32(t.conn.fd))
	t.conn.close()
}

// wait waits for ready sockets until next (no limit when zero); held
// says to wait holding the loop's P (the runtime's share of a CPU).
func (l *eventLoop) wait(events []unix.EpollEvent, held bool, next, now time.Time) (int, error) {
	ms := -1
	if !next.IsZero() {
		d := next.Sub(now)
		ms = max(0, int((d+time.Millisecond-1)/time.Millisecond))
	}
	if !held {
		return unix.EpollWait(l.epfd, events, ms)
	}
	// Held for heldWait at most, so the loop notices soon when the ACKs
	// stop and gives the P back.
	wait := int(heldWait / time.Millisecond)
	if ms >= 0 {
		wait = min(wait, ms)
	}
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_WAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(wait), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// heldWait bounds one wait holding the P, so the loop notices soon when
// the ACKs stop and gives the P back; after idleWaits empty waits in a
// row it waits the runtime's way. A collection's stop-the-world does not
// wait for the bound: its preemption signal interrupts epoll_wait (EINTR),
// and the loop stops at its next function call.
//
// loneSteps bounds the round trips a lone transfer waits in its socket's
// receive before the loop looks at its other sockets (the requests') in
// an epoll_wait: a request waits no longer than that for its transfer
// to begin.
const (
	heldWait  = time.Millisecond
	idleWaits = 4
	loneSteps = 16
)

// reserveP gives the runtime a P more (GOMAXPROCS), once per process, for
// the event loop to hold while its transfers are busy: the loop sleeping
// in the kernel with its P then takes no CPU share from the rest of the
// process, and its thread is like a process of its own (dnsmasq's loop),
// which the kernel runs when an ACK comes. Raised once, not while the
// loop holds its P only: every change of GOMAXPROCS stops the world. (A
// server on IPv4 and IPv6 has a loop on each; both busy at once is a
// storm over both families, and then they share the P more.)
var reserveP = sync.OnceFunc(func() {
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
})
