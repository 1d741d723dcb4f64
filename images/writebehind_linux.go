package images

import (
	"os"

	"golang.org/x/sys/unix"
)

// writeBehind writes a download to its file and hands what it wrote to
// the kernel's write-back a window at a time, so that the disk writes the
// first bytes while later ones are still arriving, and the Sync that ends
// a download waits for its last two windows only. Left to itself, the
// kernel starts writing a file back only once the machine's dirty pages
// pass the background threshold (10% of memory by default), so a download
// smaller than that reached the disk at its Sync, after its last byte
// came: the time of the download plus that of the disk, where it can be
// the slower of the two.
//
// Each time it hands a window over it waits for the one before, which
// bounds a download's dirty pages to two windows: a source faster than
// the disk is held to the disk's pace instead of filling memory with
// pages that the kernel would later throttle every writer on the machine
// to flush.
type writeBehind struct {
	f  *os.File
	fd int
	// next is the file offset of the next byte written; the bytes before
	// handed have been handed to write-back, and those before written
	// have reached the disk.
	next, handed, written int64
	// refused says the file system refused write-back requests; the
	// final Sync still makes the file durable.
	refused bool
}

// writeBehindWindow is how much is handed to write-back at once: large
// enough that its two system calls are nothing beside writing it, small
// enough that the final Sync has little left.
const writeBehindWindow = 8 << 20

// newWriteBehind writes to f from its current offset, at.
func newWriteBehind(f *os.File, at int64) *writeBehind {
	return &writeBehind{f: f, fd: int(f.Fd()), next: at, handed: at, written: at}
}

func (w *writeBehind) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.next += int64(n)
	if err != nil || w.refused || w.next-w.handed < writeBehindWindow {
		return n, err
	}
	// Errors here are not the download's: a page that fails to write
	// back fails the final Sync, which reports it.
	if unix.SyncFileRange(w.fd, w.handed, w.next-w.handed, unix.SYNC_FILE_RANGE_WRITE) != nil {
		w.refused = true
		return n, nil
	}
	if w.handed > w.written {
		if unix.SyncFileRange(w.fd, w.written, w.handed-w.written,
			unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER) != nil {
			w.refused = true
			return n, nil
		}
		w.written = w.handed
	}
	w.handed = w.next
	return n, nil
}
