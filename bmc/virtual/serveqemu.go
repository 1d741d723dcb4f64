package virtual

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"

	"golang.org/x/sync/errgroup"
)

// QEMUOptions are the BMCs `metal vbmc` serves: one Redfish service per
// listen address, for the QEMU machines given on it.
type QEMUOptions struct {
	// Machines are --machine specs (ParseQEMUSpec); one without a listen
	// address of its own is served on Listen.
	Machines []string
	Listen   string
	// TLS serves HTTPS with a self-signed certificate for the listen
	// hosts, written to CertOut when set (clients' ca_file).
	TLS      bool
	CertOut  string
	Username string
	Password string
	// StateDir keeps what the BMCs must remember across restarts (the
	// machines' firmware versions, RAID volumes and the volumes' disks);
	// "" forgets it, and volumes are then records without disks.
	StateDir string
	Log      *slog.Logger
	// Serving is told each service's URL and machines once every address
	// is bound.
	Serving func(url string, machines []string)
}

// ErrSpec wraps what is wrong with a --machine spec.
type ErrSpec struct{ Err error }

func (e ErrSpec) Error() string { return e.Err.Error() }
func (e ErrSpec) Unwrap() error { return e.Err }

// ServeQEMU serves opts until ctx ends. It binds every address before it
// serves any, so a taken port fails cleanly, and stops the QEMUs it
// started when it returns.
func ServeQEMU(ctx context.Context, opts QEMUOptions) error {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	groups := map[string][]MachineSpec{}
	var order []string
	var qemus []*QEMU
	defer func() {
		for _, q := range qemus {
			if err := q.Close(); err != nil {
				log.Error("stop qemu", "err", err)
			}
		}
	}()
	for _, s := range opts.Machines {
		spec, err := ParseQEMUSpec(s)
		if err != nil {
			return ErrSpec{err}
		}
		// The volumes' disks are kept with the rest of what the BMC
		// remembers.
		q, err := NewQEMU(QEMUConfig{Name: spec.Name, QMPSocket: spec.QMP, Command: spec.Command, CDROMDrive: spec.CDROM,
			VolumeDir: opts.StateDir, Log: log})
		if err != nil {
			return ErrSpec{err}
		}
		qemus = append(qemus, q)
		addr := spec.Listen
		if addr == "" {
			addr = opts.Listen
		}
		if _, seen := groups[addr]; !seen {
			order = append(order, addr)
		}
		groups[addr] = append(groups[addr], MachineSpec{Name: spec.Name, Machine: q, Serial: spec.Serial, MACs: spec.MACs})
	}

	var cert *tls.Certificate
	scheme := "http"
	if opts.TLS {
		var hosts []string
		for _, addr := range order {
			if h, _, err := net.SplitHostPort(addr); err == nil {
				hosts = append(hosts, h)
			}
		}
		c, pem, err := SelfSignedCert(hosts...)
		if err != nil {
			return err
		}
		if opts.CertOut != "" {
			if err := os.WriteFile(opts.CertOut, pem, 0o644); err != nil {
				return fmt.Errorf("write certificate: %w", err)
			}
		}
		cert, scheme = &c, "https"
	}

	type listener struct {
		srv *Server
		ln  net.Listener
	}
	var lns []listener
	for _, addr := range order {
		srv, err := NewServer(Options{Username: opts.Username, Password: opts.Password, Log: log, StateDir: opts.StateDir}, groups[addr]...)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns {
				l.ln.Close()
			}
			return fmt.Errorf("listen: %w", err)
		}
		lns = append(lns, listener{srv, ln})
	}
	for i, addr := range order {
		var names []string
		for _, m := range groups[addr] {
			names = append(names, m.Name)
		}
		if opts.Serving != nil {
			opts.Serving(fmt.Sprintf("%s://%s", scheme, lns[i].ln.Addr()), names)
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, l := range lns {
		g.Go(func() error { return l.srv.Serve(ctx, l.ln, cert) })
	}
	return g.Wait()
}
