package dhcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// Lease is one binding the server keeps across restarts: an address leased
// to a MAC (possibly expired: a MAC keeps getting its old address while no
// one else took it), or an address a MAC declined as in use.
type Lease struct {
	MAC      net.HardwareAddr
	IP       netip.Addr
	Hostname string
	Expiry   time.Time
	// Declined: the MAC reported IP in use by someone else; the address
	// stays out of the pool until Expiry.
	Declined bool
}

// LeaseStore keeps the lease table across restarts. Save gets the whole
// table each time (it is bounded by the pools and the declared machines),
// and must make it durable before returning: the server acknowledges a
// lease only after Save has returned.
type LeaseStore interface {
	Load(ctx context.Context) ([]Lease, error)
	Save(ctx context.Context, leases []Lease) error
}

// FileStore is a LeaseStore in one JSON file, replaced atomically (temp file,
// fsync, rename, fsync of the directory) on each Save, so a crash leaves
// either the old table or the new one.
type FileStore struct {
	path string
}

// NewFileStore returns a store in the file at path; the file need not
// exist yet, its directory must.
func NewFileStore(path string) *FileStore {
	return &FileStore{path: path}
}

// fileFormat is the on-disk form; MACs as text so the file can be read.
type fileFormat struct {
	Version int         `json:"version"`
	Leases  []fileLease `json:"leases"`
}

type fileLease struct {
	MAC      string    `json:"mac"`
	IP       string    `json:"ip"`
	Hostname string    `json:"hostname,omitempty"`
	Expiry   time.Time `json:"expiry"`
	Declined bool      `json:"declined,omitempty"`
}

const fileVersion = 1

// Load reads the leases; a missing file is an empty table.
func (f *FileStore) Load(ctx context.Context) ([]Lease, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	var ff fileFormat
	if err := json.Unmarshal(b, &ff); err != nil {
		return nil, fmt.Errorf("parse leases %s: %w", f.path, err)
	}
	if ff.Version != fileVersion {
		return nil, fmt.Errorf("leases %s: version %d, want %d", f.path, ff.Version, fileVersion)
	}
	leases := make([]Lease, 0, len(ff.Leases))
	for i, fl := range ff.Leases {
		mac, err := net.ParseMAC(fl.MAC)
		if err != nil {
			return nil, fmt.Errorf("leases %s: entry %d: %w", f.path, i, err)
		}
		ip, err := netip.ParseAddr(fl.IP)
		if err != nil {
			return nil, fmt.Errorf("leases %s: entry %d: %w", f.path, i, err)
		}
		leases = append(leases, Lease{MAC: mac, IP: ip, Hostname: fl.Hostname, Expiry: fl.Expiry, Declined: fl.Declined})
	}
	return leases, nil
}

// Save replaces the file with leases.
func (f *FileStore) Save(ctx context.Context, leases []Lease) error {
	ff := fileFormat{Version: fileVersion, Leases: make([]fileLease, len(leases))}
	for i, l := range leases {
		ff.Leases[i] = fileLease{MAC: l.MAC.String(), IP: l.IP.String(), Hostname: l.Hostname, Expiry: l.Expiry.UTC(), Declined: l.Declined}
	}
	b, err := json.MarshalIndent(ff, "", " ")
	if err != nil {
		return fmt.Errorf("encode leases: %w", err)
	}
	dir := filepath.Dir(f.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.path)+".*")
	if err != nil {
		return fmt.Errorf("save leases: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this fails harmlessly
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("save leases: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save leases: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save leases: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("save leases: %w", err)
	}
	// The rename is durable only once the directory is.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("save leases: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("save leases: sync %s: %w", dir, err)
	}
	return nil
}
