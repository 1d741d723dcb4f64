package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/metal-dev/metal/bmc/virtual"
)

type vbmcArgs struct {
	listen       string
	machines     []string
	tls          bool
	certOut      string
	user         string
	passwordFile string
}

func newVBMCCmd(a *app) *cobra.Command {
	var v vbmcArgs
	cmd := &cobra.Command{
		Use:   "vbmc --machine SPEC [--machine SPEC...]",
		Short: "Run a virtual Redfish BMC for QEMU machines (lab and CI)",
		Long: `vbmc serves Redfish for QEMU machines, so a lab or CI run drives them with
the same code paths as a rack of real servers. It controls each VM over its
QMP socket: power on (re)starts QEMU with the machine's command line and
the pending boot device, power off quits it, reset restarts it.

A --machine SPEC is comma-separated key=value pairs; qemu-cmd comes last
and takes the rest of the value:
  name=NAME        the Redfish system (bmc "system" in the site file)
  qmp=PATH         QMP socket path (vbmc adds -qmp to the command)
  mac=MAC          a NIC MAC reported in the inventory (repeatable)
  serial=S         serial number reported in the inventory
  cdrom=DRIVE      QEMU drive id that virtual media goes into
  listen=ADDR      this machine on its own port instead of --listen
  qemu-cmd=CMD...  how to start the VM; omit to control a running QEMU

The password is read from --password-file (or METAL_VBMC_PASSWORD) and
never printed. With --tls a self-signed certificate is generated at start;
--cert-out writes it for clients' ca_file.`,
		Example: `  metal vbmc --listen 127.0.0.1:8443 --tls --cert-out vbmc-ca.pem \
    --user admin --password-file bmc.pw \
    --machine 'name=vm-01,qmp=/tmp/vm-01.qmp,mac=52:54:00:00:01:01,qemu-cmd=qemu-system-x86_64 -m 512 -display none -nic bridge,br=br0,mac=52:54:00:00:01:01'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runVBMC(cmd.Context(), a, v)
		},
	}
	f := cmd.Flags()
	f.StringVar(&v.listen, "listen", "127.0.0.1:8000", "address for machines without their own listen=")
	f.StringArrayVar(&v.machines, "machine", nil, "a machine: name=...,qmp=...[,mac=...][,listen=...],qemu-cmd=... (repeatable)")
	f.BoolVar(&v.tls, "tls", false, "serve HTTPS with a generated self-signed certificate")
	f.StringVar(&v.certOut, "cert-out", "", "write the generated certificate (PEM) here, for clients' ca_file")
	f.StringVar(&v.user, "user", "admin", "Redfish username")
	f.StringVar(&v.passwordFile, "password-file", "", "file holding the Redfish password (or set METAL_VBMC_PASSWORD)")
	return cmd
}

func runVBMC(ctx context.Context, a *app, v vbmcArgs) error {
	if len(v.machines) == 0 {
		return usageError("at least one --machine is needed")
	}
	pass := os.Getenv("METAL_VBMC_PASSWORD")
	if v.passwordFile != "" {
		b, err := os.ReadFile(v.passwordFile)
		if err != nil {
			return fmt.Errorf("read password file: %w", err)
		}
		pass = strings.TrimRight(string(b), "\r\n")
	}
	if pass == "" {
		return usageError("no password: use --password-file or METAL_VBMC_PASSWORD")
	}
	log := a.logger()
	groups := map[string][]virtual.MachineSpec{}
	var order []string
	var qemus []*virtual.QEMU
	defer func() {
		for _, q := range qemus {
			if err := q.Close(); err != nil {
				log.Error("stop qemu", "error", err)
			}
		}
	}()
	for _, s := range v.machines {
		spec, err := virtual.ParseQEMUSpec(s)
		if err != nil {
			return usageError("--machine: %v", err)
		}
		q, err := virtual.NewQEMU(virtual.QEMUConfig{Name: spec.Name, QMPSocket: spec.QMP, Command: spec.Command, CDROMDrive: spec.CDROM, Log: log})
		if err != nil {
			return usageError("--machine: %v", err)
		}
		qemus = append(qemus, q)
		addr := spec.Listen
		if addr == "" {
			addr = v.listen
		}
		if _, seen := groups[addr]; !seen {
			order = append(order, addr)
		}
		groups[addr] = append(groups[addr], virtual.MachineSpec{Name: spec.Name, Machine: q, Serial: spec.Serial, MACs: spec.MACs})
	}

	var cert *tls.Certificate
	scheme := "http"
	if v.tls {
		var hosts []string
		for _, addr := range order {
			if h, _, err := net.SplitHostPort(addr); err == nil {
				hosts = append(hosts, h)
			}
		}
		c, pem, err := virtual.SelfSignedCert(hosts...)
		if err != nil {
			return err
		}
		if v.certOut != "" {
			if err := os.WriteFile(v.certOut, pem, 0o644); err != nil {
				return fmt.Errorf("write certificate: %w", err)
			}
		}
		cert, scheme = &c, "https"
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Listen on every address before serving any, so a taken port fails
	// the command cleanly.
	type listener struct {
		srv *virtual.Server
		ln  net.Listener
	}
	var lns []listener
	for _, addr := range order {
		srv, err := virtual.NewServer(virtual.Options{Username: v.user, Password: pass, Log: log}, groups[addr]...)
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
		var names []string
		for _, m := range groups[addr] {
			names = append(names, m.Name)
		}
		fmt.Fprintf(a.stdout, "vbmc: Redfish at %s://%s for %s\n", scheme, ln.Addr(), strings.Join(names, ", "))
		lns = append(lns, listener{srv, ln})
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, l := range lns {
		g.Go(func() error { return l.srv.Serve(ctx, l.ln, cert) })
	}
	return g.Wait()
}
