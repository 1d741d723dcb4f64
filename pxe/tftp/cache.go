package tftp

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"syscall"
)

// bootProgram marks the FileInfo of an iPXE binary (openFile). Every
// machine of a rack that netboots fetches one, many at once when power
// comes back, so the windowed sender keeps their bytes in memory
// (bootCache) instead of reading the file again for each transfer.
type bootProgram struct{ fs.FileInfo }

// maxCached is the largest boot program kept in memory; iPXE's binaries
// are 70 KiB to 1 MiB.
const maxCached = 4 << 20

// bootCache holds the content of the boot programs served, one version
// per name. A version is known by the file's identity (device, inode,
// size, modification and change times), so a binary replaced or
// rewritten is read afresh: the cache never serves bytes the file no
// longer holds.
type bootCache struct {
	mu    sync.Mutex
	files map[string]cachedFile
}

type cachedFile struct {
	id   fileID
	data []byte
}

type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime syscall.Timespec
}

// idOf is fi's identity, false when fi says too little to have one.
func idOf(fi fs.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}, true
}

// bytes returns the content of f, a boot program just opened as name
// with FileInfo fi: from memory when this version was read before, else
// read from f and kept. ok is false for a file too large or without an
// identity: the caller reads f itself.
func (c *bootCache) bytes(name string, f *os.File, fi fs.FileInfo) (data []byte, ok bool, err error) {
	id, ok := idOf(fi)
	if !ok || id.size > maxCached {
		return nil, false, nil
	}
	c.mu.Lock()
	e, hit := c.files[name]
	c.mu.Unlock()
	if hit && e.id == id {
		return e.data, true, nil
	}
	// Read outside the lock: transfers of other files go on meanwhile;
	// several first transfers of one file may each read it once.
	data = make([]byte, id.size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, false, fmt.Errorf("read %q: %w", name, err)
	}
	c.mu.Lock()
	if c.files == nil {
		c.files = map[string]cachedFile{}
	}
	c.files[name] = cachedFile{id: id, data: data}
	c.mu.Unlock()
	return data, true, nil
}
