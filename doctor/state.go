package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/metal-dev/metal/images/source"
	"github.com/metal-dev/metal/inventory/backend"
	"github.com/metal-dev/metal/site"
)

// probeSize is what the state directory check writes: enough to notice a
// file system that is full, small enough to cost nothing.
const probeSize = 64 << 10

// checkState checks the state store (it opens and is writable, or is held
// by a running metal serve of this site) and the state directory (leases
// and staged files can be written, with room for the staged images).
func checkState(ctx context.Context, opts Options, siteDir string, self selfRef) []Check {
	state := site.ResolveState(opts.Site.Settings.State, siteDir)
	return []Check{
		checkStore(ctx, state, self),
		checkStateDir(stateDir(opts, siteDir), stagedBytes(opts, siteDir)),
	}
}

// stateDir is where serve keeps leases, staged files and the image cache.
func stateDir(opts Options, siteDir string) string {
	if opts.StateDir != "" {
		return opts.StateDir
	}
	return site.DefaultStateDir(opts.Site.Settings.State, siteDir)
}

func checkStore(ctx context.Context, state string, self selfRef) Check {
	c := Check{Kind: KindState, Subject: "state store"}
	loc, err := backend.Parse(state)
	if err != nil {
		c.Status, c.Detail, c.Fix = Fail, err.Error(), "fix the site's state setting"
		return c
	}
	switch loc.Scheme {
	case "memory":
		c.Status, c.Detail = Warn, "memory:// keeps nothing: every restart forgets machines and leases"
		c.Fix = "set state = \"file://...\" (or etcd://) for a site that should remember"
		return c
	case "file":
		if holders, locked := fileLocked(loc.Path); locked {
			for _, h := range holders {
				if h.servesSite(self) {
					c.Status, c.Detail = OK, fmt.Sprintf("%s is open in a running metal serve of this site (PID %d)", loc.Path, h.pid)
					return c
				}
			}
			c.Status = Fail
			c.Detail = fmt.Sprintf("%s is locked by another process", loc.Path)
			if len(holders) > 0 {
				c.Detail = fmt.Sprintf("%s is locked by %s", loc.Path, holders[0])
			}
			c.Fix = "stop the other metal using this store, or give this site its own state path"
			return c
		}
		if _, err := os.Stat(loc.Path); errors.Is(err, fs.ErrNotExist) {
			// Opening would create it; say so and leave creating to serve.
			st, detail, fix := probeDir(nearestDir(filepath.Dir(loc.Path)), 0)
			c.Status, c.Detail, c.Fix = st, fmt.Sprintf("%s does not exist yet; metal serve creates it (%s)", loc.Path, detail), fix
			return c
		}
	}
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	store, err := backend.Open(octx, state, backend.Options{DialTimeout: 5 * time.Second, LockTimeout: 200 * time.Millisecond})
	if err != nil {
		c.Status, c.Detail, c.Fix = Fail, err.Error(), storeFix(loc.Scheme, err)
		return c
	}
	defer store.Close()
	ms, _, err := store.Machines(octx)
	if err != nil {
		c.Status, c.Detail, c.Fix = Fail, fmt.Sprintf("%s opens but cannot be read: %v", state, err), storeFix(loc.Scheme, err)
		return c
	}
	c.Status, c.Detail = OK, fmt.Sprintf("%s opens and is writable (%d machines recorded)", state, len(ms))
	if loc.Scheme == "etcd" {
		c.Detail = fmt.Sprintf("%s answers (%d machines recorded)", state, len(ms))
	}
	return c
}

func storeFix(scheme string, err error) string {
	switch {
	case scheme == "etcd":
		return "is etcd running at those endpoints and reachable from this host? (etcdctl endpoint health)"
	case errors.Is(err, syscall.EROFS):
		return "the file system is read-only: remount it read-write, or put the state elsewhere"
	case errors.Is(err, syscall.ENOSPC):
		return "the file system is full: free space on it"
	case errors.Is(err, fs.ErrPermission):
		return "make the store and its directory writable by the user metal runs as"
	}
	return "check the state file; restore it from a backup (metal backup) if it is damaged"
}

// fileLocked reports whether another process holds the bbolt lock on the
// store file, and which processes have it open.
func fileLocked(path string) ([]process, bool) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	// bbolt holds an exclusive flock while open for writing; a shared one
	// is refused then, and taking it changes nothing for anyone.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err == nil {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return nil, false
	}
	abs, _ := filepath.Abs(path)
	self := os.Getpid()
	var holders []process
	for _, p := range processesWith(func(link string) bool { return link == abs }) {
		if p.pid != self {
			holders = append(holders, p)
		}
	}
	return holders, true
}

// stagedBytes is what serve copies into the state directory: the local
// files of every image.
func stagedBytes(opts Options, siteDir string) int64 {
	var n int64
	for _, im := range opts.Site.Images {
		srcs := append([]site.Source{im.Kernel, im.Disk}, im.Initrd...)
		for _, src := range srcs {
			if src.URL == "" || src.Remote() {
				continue
			}
			if fi, err := os.Stat(source.LocalPath(siteDir, src.URL)); err == nil {
				n += fi.Size()
			}
		}
	}
	return n
}

func checkStateDir(dir string, need int64) Check {
	c := Check{Kind: KindState, Subject: "state directory"}
	probe := nearestDir(dir)
	st, detail, fix := probeDir(probe, need)
	if probe != dir && st == OK {
		detail = fmt.Sprintf("%s does not exist yet; metal serve creates it (%s)", dir, detail)
	}
	c.Status, c.Detail, c.Fix = st, detail, fix
	return c
}

// nearestDir is dir, or its closest existing ancestor.
func nearestDir(dir string) string {
	for {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return dir
		}
		dir = parent
	}
}

// probeDir writes, syncs and removes a small file in dir, and checks that
// the file system has room for need more bytes.
func probeDir(dir string, need int64) (Status, string, string) {
	f, err := os.CreateTemp(dir, ".metal-doctor-*")
	if err == nil {
		_, err = f.Write(make([]byte, probeSize))
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		os.Remove(f.Name())
	}
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return Fail, fmt.Sprintf("%s is on a full file system", dir),
			"free space there, or run metal serve --state-dir on a file system with room"
	case errors.Is(err, syscall.EROFS):
		return Fail, fmt.Sprintf("%s is on a read-only file system", dir),
			"remount it read-write, or run metal serve --state-dir on a writable file system"
	case errors.Is(err, fs.ErrPermission):
		return Fail, fmt.Sprintf("%s is not writable by this user (uid %d)", dir, os.Geteuid()),
			"run as the user metal serve runs as, or fix the directory's owner"
	case err != nil:
		return Fail, fmt.Sprintf("cannot write in %s: %v", dir, err), "check the directory and its file system"
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err == nil {
		free := int64(sfs.Bavail) * int64(sfs.Bsize)
		if need > 0 && free < need+probeSize {
			return Fail, fmt.Sprintf("%s has %s free; staging the site's images needs %s", dir, size(free), size(need)),
				"free space there, or run metal serve --state-dir on a file system with room"
		}
		return OK, fmt.Sprintf("%s is writable, %s free", dir, size(free)), ""
	}
	return OK, fmt.Sprintf("%s is writable", dir), ""
}

// size is n in MiB, enough to judge free space by.
func size(n int64) string { return fmt.Sprintf("%d MiB", n>>20) }
