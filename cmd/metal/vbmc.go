package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/bmc/virtual"
)

// vbmcArgs parse into the BMCs' options, but for the password, which is
// read from a file or the environment.
type vbmcArgs struct {
	opts         virtual.QEMUOptions
	passwordFile string
}

func newVBMCCmd(a *app) *cobra.Command {
	var v vbmcArgs
	cmd := &cobra.Command{
		Use:   "vbmc --machine SPEC [--machine SPEC...]",
		Short: "Run a virtual Redfish BMC for QEMU machines (lab and CI)",
		Long:  helpText("vbmc"),
		Example: `  metal vbmc --listen 127.0.0.1:8443 --tls --cert-out vbmc-ca.pem \
    --user admin --password-file bmc.pw \
    --machine 'name=vm-01,qmp=/tmp/vm-01.qmp,mac=52:54:00:00:01:01,qemu-cmd=qemu-system-x86_64 -m 512 -display none -nic bridge,br=br0,mac=52:54:00:00:01:01'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runVBMC(cmd.Context(), a, v)
		},
	}
	f := cmd.Flags()
	f.StringVar(&v.opts.Listen, "listen", "127.0.0.1:8000", "address for machines without their own listen=")
	f.StringArrayVar(&v.opts.Machines, "machine", nil, "a machine: name=...,qmp=...[,mac=...][,listen=...],qemu-cmd=... (repeatable)")
	f.BoolVar(&v.opts.TLS, "tls", false, "serve HTTPS with a generated self-signed certificate")
	f.StringVar(&v.opts.CertOut, "cert-out", "", "write the generated certificate (PEM) here, for clients' ca_file")
	f.StringVar(&v.opts.Username, "user", "admin", "Redfish username")
	f.StringVar(&v.passwordFile, "password-file", "", "file holding the Redfish password (or set METAL_VBMC_PASSWORD)")
	f.StringVar(&v.opts.StateDir, "state-dir", "", "keep the machines' firmware versions, BIOS settings, RAID volumes and the volumes' disks (which their QEMU gets) here across restarts, as a real machine keeps them")
	return cmd
}

func runVBMC(ctx context.Context, a *app, v vbmcArgs) error {
	if len(v.opts.Machines) == 0 {
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
	ctx, stop := interruptible(ctx)
	defer stop()
	opts := v.opts
	opts.Password, opts.Log = pass, a.logger()
	opts.Serving = func(url string, machines []string) {
		fmt.Fprintf(a.stdout, "vbmc: Redfish at %s for %s\n", url, strings.Join(machines, ", "))
	}
	err := virtual.ServeQEMU(ctx, opts)
	var spec virtual.ErrSpec
	if errors.As(err, &spec) {
		return usageError("--machine: %v", spec.Err)
	}
	return err
}
