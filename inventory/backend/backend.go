// Package backend opens an inventory store from the site's state URL:
//
//	file://PATH                        bbolt file (relative PATH: file://.metal/state.db)
//	etcd://host:port,host:port/prefix  etcd cluster; TLS from Options.EtcdTLS
//	memory://                          in-memory (tests, dry runs)
//
// It is apart from package inventory because it imports the backends, which
// import inventory.
package backend

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/metal-dev/metal/inventory"
	"github.com/metal-dev/metal/inventory/bolt"
	"github.com/metal-dev/metal/inventory/etcd"
)

// Options tunes Open. The zero value is usable.
type Options struct {
	Logger *slog.Logger
	// Store options (event retention, clock).
	Store inventory.Options
	// EtcdTLS, when set, makes etcd:// connect with TLS.
	EtcdTLS *etcd.TLSOptions
	// EtcdUsername and EtcdPassword authenticate to etcd.
	EtcdUsername, EtcdPassword string
	// DialTimeout bounds reaching etcd, LockTimeout waiting for a bbolt lock.
	DialTimeout time.Duration
	LockTimeout time.Duration
	// EtcdDial connects to an etcd endpoint (default TCP from this host).
	EtcdDial func(ctx context.Context, addr string) (net.Conn, error)
}

// Location is a parsed state URL.
type Location struct {
	Scheme    string   // "file", "etcd" or "memory"
	Path      string   // file
	Endpoints []string // etcd
	Prefix    string   // etcd, "/metal/" when the URL names none
}

// Parse checks a state URL. Errors name the URL and the accepted forms.
func Parse(raw string) (Location, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return Location{}, fmt.Errorf("state %q: want file://PATH, etcd://HOST:PORT[,HOST:PORT...]/PREFIX or memory://", raw)
	}
	switch scheme {
	case "file":
		if rest == "" {
			return Location{}, fmt.Errorf("state %q: file:// needs a path", raw)
		}
		return Location{Scheme: scheme, Path: rest}, nil
	case "etcd":
		hosts, prefix, _ := strings.Cut(rest, "/")
		if hosts == "" {
			return Location{}, fmt.Errorf("state %q: etcd:// needs host:port", raw)
		}
		var eps []string
		for _, h := range strings.Split(hosts, ",") {
			if !strings.Contains(h, ":") {
				return Location{}, fmt.Errorf("state %q: endpoint %q needs a port (etcd's is usually 2379)", raw, h)
			}
			eps = append(eps, h)
		}
		prefix = "/" + strings.Trim(prefix, "/") + "/"
		if prefix == "//" {
			prefix = "/metal/"
		}
		return Location{Scheme: scheme, Endpoints: eps, Prefix: prefix}, nil
	case "memory":
		return Location{Scheme: scheme}, nil
	}
	return Location{}, fmt.Errorf("state %q: unknown scheme %q (want file, etcd or memory)", raw, scheme)
}

// Open opens the store at the state URL raw.
func Open(ctx context.Context, raw string, opts Options) (inventory.Store, error) {
	loc, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Store.Logger == nil {
		opts.Store.Logger = opts.Logger
	}
	var kv inventory.KV
	switch loc.Scheme {
	case "file":
		b, err := bolt.Open(loc.Path, bolt.Options{Logger: opts.Logger, LockTimeout: opts.LockTimeout})
		if err != nil {
			return nil, err
		}
		kv = b
	case "etcd":
		e, err := etcd.Open(ctx, etcd.Config{
			Endpoints: loc.Endpoints, Prefix: loc.Prefix, TLS: opts.EtcdTLS,
			Username: opts.EtcdUsername, Password: opts.EtcdPassword,
			DialTimeout: opts.DialTimeout, Logger: opts.Logger, Dial: opts.EtcdDial,
		})
		if err != nil {
			return nil, err
		}
		kv = e
	case "memory":
		kv = inventory.NewMemoryKV()
	}
	s, err := inventory.Open(ctx, kv, opts.Store)
	if err != nil {
		kv.Close()
		return nil, fmt.Errorf("state %s: %w", raw, err)
	}
	return s, nil
}
