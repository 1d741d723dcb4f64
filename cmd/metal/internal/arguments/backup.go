package arguments

import (
	"context"
	"log/slog"
	"time"

	"github.com/spf13/pflag"

	"github.com/metal-dev/metal/inventory/backup"
)

// SSH says how the backup verbs reach the SFTP server, and with which
// backup key they sign and check what is there.
type SSH struct {
	KnownHosts string
	Identities []string
	Timeout    time.Duration
	KeyFile    string
}

func (f *SSH) Register(fs *pflag.FlagSet) {
	fs.StringVar(&f.KnownHosts, "known-hosts", "", "known_hosts file checked for the server's host key (default ~/.ssh/known_hosts); an unknown or changed key is refused")
	fs.StringArrayVarP(&f.Identities, "identity", "i", nil, "private key file to offer (repeatable; default the ssh-agent and ~/.ssh/id_*)")
	fs.DurationVar(&f.Timeout, "ssh-timeout", 15*time.Second, "bound on connecting to the SFTP server")
	fs.StringVar(&f.KeyFile, "key", "", "backup key file (metal backup keygen): sign snapshots, heartbeats and fences, and refuse those "+
		"not signed with it; the same file on the primary and the standby, never on the SFTP server")
}

// Key loads --key; without one it warns that nothing is authenticated.
func (f *SSH) Key(log *slog.Logger) (*backup.Key, error) {
	if f.KeyFile == "" {
		log.Warn("no backup key (--key): snapshots, heartbeats and fences are not authenticated; " +
			"whoever can write the SFTP directory can forge them. Make one with metal backup keygen")
		return nil, nil
	}
	k, err := backup.LoadKey(f.KeyFile)
	if err != nil {
		return nil, Usage("--key: %v", err)
	}
	return k, nil
}

func (f *SSH) options(log *slog.Logger) backup.SSHOptions {
	return backup.SSHOptions{KnownHosts: f.KnownHosts, KeyFiles: f.Identities, Timeout: f.Timeout, Logger: log}
}

// Dial connects to the directory of raw (sftp://user@host[:port]/path),
// with the backup key.
func (f *SSH) Dial(ctx context.Context, log *slog.Logger, raw string) (*backup.Remote, error) {
	t, err := backup.ParseTarget(raw)
	if err != nil {
		return nil, Usage("%v", err)
	}
	key, err := f.Key(log)
	if err != nil {
		return nil, err
	}
	r, err := backup.Dial(ctx, t, f.options(log))
	if err != nil {
		return nil, err
	}
	r.Key = key
	return r, nil
}

// Primary makes `metal serve` the primary of a disaster-recovery pair: it
// ships snapshots of the store it holds and a heartbeat to an SFTP
// directory a standby reads (`metal standby`), and stops serving when a
// standby was promoted there (`metal promote` writes the fence). Only serve
// can snapshot an embedded store while it runs: it holds the file.
type Primary struct {
	SSH     SSH
	To      string
	Every   time.Duration
	Keep    int
	Owner   string
	Encrypt bool
}

func (f *Primary) Register(fs *pflag.FlagSet) {
	f.SSH.Register(fs)
	fs.StringVar(&f.To, "backup-to", "", "ship a snapshot and a heartbeat every --backup-every to this SFTP directory "+
		"(sftp://USER@HOST[:PORT]/PATH), for a standby (metal standby); stop serving once a standby is promoted there")
	fs.DurationVar(&f.Every, "backup-every", 5*time.Minute, "interval of snapshots and heartbeats; serve stops once it confirmed none for 3 intervals (its lease), and metal promote waits that long plus its --margin")
	fs.IntVar(&f.Keep, "backup-keep", 48, "keep the newest N snapshots in the SFTP directory (0: keep all)")
	fs.StringVar(&f.Owner, "owner", "", "name of this instance of the site for the fence (default this host's name and machine-id); "+
		"a promoted standby serves with the --owner it was promoted as")
	fs.BoolVar(&f.Encrypt, "backup-encrypt", false, "seal the snapshots with age to the backup key (--key)")
}

// Start connects to the backup directory and checks the fence before
// anything is served (backup.Primary.Open). It returns nil when no
// --backup-to was given (and refuses if this instance is marked fenced);
// the primary's Serve runs beside the daemon.
func (f *Primary) Start(ctx context.Context, log *slog.Logger, siteName, stateDir string) (*backup.Primary, error) {
	if f.To == "" {
		return nil, backup.CheckMark(stateDir, siteName)
	}
	if f.Every < time.Second {
		return nil, Usage("--backup-every %v: want at least 1s", f.Every)
	}
	t, err := backup.ParseTarget(f.To)
	if err != nil {
		return nil, Usage("--backup-to: %v", err)
	}
	key, err := f.SSH.Key(log)
	if err != nil {
		return nil, err
	}
	if f.Encrypt && key == nil {
		return nil, Usage("--backup-encrypt: name the backup key to seal with (--key)")
	}
	p := &backup.Primary{Site: siteName, Owner: f.Owner, Interval: f.Every, Keep: f.Keep, Logger: log, Key: key, Encrypt: f.Encrypt, StateDir: stateDir}
	if err := p.Open(ctx, t, f.SSH.options(log)); err != nil {
		return nil, err
	}
	return p, nil
}
