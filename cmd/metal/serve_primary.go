package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/inventory/backup"
	"github.com/metal-dev/metal/site"
)

// primaryFlags make `metal serve` the primary of a disaster-recovery pair:
// it ships snapshots of the store it holds and a heartbeat to an SFTP
// directory a standby reads (`metal standby`), and stops serving when a
// standby was promoted there (`metal promote` writes the fence). Only serve
// can snapshot an embedded store while it runs: it holds the file.
type primaryFlags struct {
	ssh     sshFlags
	to      string
	every   time.Duration
	keep    int
	owner   string
	encrypt bool
}

func (f *primaryFlags) register(cmd *cobra.Command) {
	f.ssh.register(cmd)
	cmd.Flags().StringVar(&f.to, "backup-to", "", "ship a snapshot and a heartbeat every --backup-every to this SFTP directory "+
		"(sftp://USER@HOST[:PORT]/PATH), for a standby (metal standby); stop serving once a standby is promoted there")
	cmd.Flags().DurationVar(&f.every, "backup-every", 5*time.Minute, "interval of snapshots and heartbeats; serve stops once it confirmed none for 3 intervals (its lease), and metal promote waits that long plus its --margin")
	cmd.Flags().IntVar(&f.keep, "backup-keep", 48, "keep the newest N snapshots in the SFTP directory (0: keep all)")
	cmd.Flags().StringVar(&f.owner, "owner", "", "name of this instance of the site for the fence (default this host's name and machine-id); "+
		"a promoted standby serves with the --owner it was promoted as")
	cmd.Flags().BoolVar(&f.encrypt, "backup-encrypt", false, "seal the snapshots with age to the backup key (--key)")
}

// startPrimary connects to the backup directory and checks the fence
// before anything is served (backup.Primary.Open). It returns nil when no
// --backup-to was given (and refuses if this instance is marked fenced);
// the primary's Serve runs beside the daemon.
func (f *primaryFlags) startPrimary(ctx context.Context, log *slog.Logger, siteName, stateDir string) (*backup.Primary, error) {
	if f.to == "" {
		return nil, backup.CheckMark(stateDir, siteName)
	}
	if f.every < time.Second {
		return nil, usageError("--backup-every %v: want at least 1s", f.every)
	}
	t, err := backup.ParseTarget(f.to)
	if err != nil {
		return nil, usageError("--backup-to: %v", err)
	}
	key, err := f.ssh.key(log)
	if err != nil {
		return nil, err
	}
	if f.encrypt && key == nil {
		return nil, usageError("--backup-encrypt: name the backup key to seal with (--key)")
	}
	p := &backup.Primary{Site: siteName, Owner: f.owner, Interval: f.every, Keep: f.keep, Logger: log, Key: key, Encrypt: f.encrypt, StateDir: stateDir}
	if err := p.Open(ctx, t, backup.SSHOptions{KnownHosts: f.ssh.knownHosts, KeyFiles: f.ssh.identities, Timeout: f.ssh.timeout, Logger: log}); err != nil {
		return nil, err
	}
	return p, nil
}

// stateDir is the state directory of s as metal serve uses it: flag, or
// beside the site's file:// store (where the fence mark is).
func stateDir(s *site.Site, siteDir, flag string) string {
	if flag != "" {
		return flag
	}
	return site.DefaultStateDir(s.Settings.State, siteDir)
}

// refuseFenced stops a verb that serves or changes machines on an instance
// marked fenced (backup.CheckMark says why and how to clear it).
func refuseFenced(s *site.Site, siteDir, stateDirFlag string) error {
	if err := backup.CheckMark(stateDir(s, siteDir, stateDirFlag), s.Name); err != nil {
		return failed(err)
	}
	return nil
}
