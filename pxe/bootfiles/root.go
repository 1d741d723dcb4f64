package bootfiles

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
)

// MaxNameLen bounds a requested file name. PXE ROMs send at most 127 bytes
// (the DHCP file field); anything much longer is a probe, not a boot.
const MaxNameLen = 255

// ErrBadName is returned, wrapped, for a requested name that is not a
// clean relative path: it names why, for the log, and the servers turn it
// into a refusal without touching the file system.
var ErrBadName = errors.New("bad file name")

// CheckName accepts only clean, relative, slash-separated names: no "..",
// no absolute path, no NUL or other control byte, no backslash (a Windows
// client's separator, which would otherwise be a literal character here),
// no empty or "." element, at most MaxNameLen bytes. Symlinks are the
// business of Root.Open, which cannot be fooled by them.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrBadName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrBadName, len(name), MaxNameLen)
	case strings.HasPrefix(name, "/"):
		return fmt.Errorf("%w: absolute path", ErrBadName)
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == 0:
			return fmt.Errorf("%w: NUL byte", ErrBadName)
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("%w: control byte %#02x", ErrBadName, c)
		case c == '\\':
			return fmt.Errorf("%w: backslash", ErrBadName)
		}
	}
	for _, elem := range strings.Split(name, "/") {
		switch elem {
		case "..":
			return fmt.Errorf("%w: parent directory element", ErrBadName)
		case ".", "":
			return fmt.Errorf("%w: empty or \".\" element", ErrBadName)
		}
	}
	if path.Clean(name) != name {
		return fmt.Errorf("%w: not a clean path", ErrBadName)
	}
	return nil
}

// Root is a directory of files served to machines. Every open goes through
// os.Root, so neither ".." nor a symlink can lead outside the directory,
// whatever CheckName missed.
type Root struct {
	dir  string
	root *os.Root
}

// OpenRoot opens dir for serving.
func OpenRoot(dir string) (*Root, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open file root: %w", err)
	}
	return &Root{dir: dir, root: r}, nil
}

// Dir is the directory served.
func (r *Root) Dir() string { return r.dir }

// Close releases the directory.
func (r *Root) Close() error { return r.root.Close() }

// Open opens a regular file by its requested name. Errors wrap ErrBadName
// for a refused name and fs.ErrNotExist for a missing file, a directory or
// a special file (a FIFO would block the server forever).
func (r *Root) Open(name string) (*os.File, fs.FileInfo, error) {
	if err := CheckName(name); err != nil {
		return nil, nil, err
	}
	// O_NONBLOCK so that opening a FIFO someone left in the tree returns at
	// once; it changes nothing for regular files.
	f, err := r.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			return nil, nil, fmt.Errorf("open %q: %w", name, err)
		}
		// os.Root reports an escaping symlink as a plain error: it is a
		// refused name, not a missing file.
		return nil, nil, fmt.Errorf("%w: open %q: %v", ErrBadName, name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("stat %q: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("open %q: not a regular file: %w", name, fs.ErrNotExist)
	}
	return f, fi, nil
}
