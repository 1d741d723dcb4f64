package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/metal-dev/metal/inventory"
)

// Fencing. Beside the snapshots, the primary keeps a heartbeat file
// (metal-<site>.heartbeat) fresh, and a promoted standby writes a fence file
// (metal-<site>.promoted):
//
//   - Promote refuses while the heartbeat is younger than StaleAfter
//     intervals (unless forced), so a standby does not take over from a
//     primary that is merely slow to back up.
//   - The primary checks for the fence file before every heartbeat and at
//     start (Primary.Beat); once it is there, Beat returns ErrFenced and
//     `metal serve` must stop answering DHCP and driving BMCs. So a promoted
//     site and a returning primary do not both hand out leases.
//
// The limit: a primary cut off from the SFTP server cannot see the fence;
// `metal serve` should treat a heartbeat it cannot write for StaleAfter
// intervals as fenced too (Primary.Run does).
//
// Times in the heartbeat are the primary's clock, compared with the
// standby's: the two must agree to well within one interval (NTP).

var (
	// ErrFenced: a standby was promoted; this primary must stop serving.
	ErrFenced = errors.New("site was promoted elsewhere (fenced)")
	// ErrPrimaryAlive: promote refused, the primary's heartbeat is fresh.
	ErrPrimaryAlive = errors.New("primary is alive")
)

// Heartbeat is the content of the heartbeat file.
type Heartbeat struct {
	Site     string        `json:"site"`
	Host     string        `json:"host"`
	PID      int           `json:"pid"`
	Time     time.Time     `json:"time"`
	Interval time.Duration `json:"interval"`
}

// Fence is the content of the fence file.
type Fence struct {
	Site string `json:"site"`
	// Owner is the site instance that is active now; every other primary
	// of the site is fenced.
	Owner  string    `json:"owner"`
	Host   string    `json:"host"`
	Time   time.Time `json:"time"`
	Forced bool      `json:"forced"`
}

func heartbeatName(site string) string { return "metal-" + site + ".heartbeat" }
func fenceName(site string) string     { return "metal-" + site + ".promoted" }

func readJSON[T any](ctx context.Context, r *Remote, name string) (T, bool, error) {
	var v T
	ok, err := r.exists(name)
	if err != nil || !ok {
		return v, false, err
	}
	var buf bytes.Buffer
	if err := r.Get(ctx, name, &buf); err != nil {
		return v, false, err
	}
	if err := json.Unmarshal(buf.Bytes(), &v); err != nil {
		return v, false, fmt.Errorf("%s: %s: %w", r.target, name, err)
	}
	return v, true, nil
}

// CheckFenced returns ErrFenced (with who promoted, and when) if the site was
// promoted to an owner other than owner.
func CheckFenced(ctx context.Context, r *Remote, site, owner string) error {
	f, ok, err := readJSON[Fence](ctx, r, fenceName(site))
	if err != nil {
		return fmt.Errorf("check fence: %w", err)
	}
	if ok && f.Owner != owner {
		return fmt.Errorf("site %s was promoted to %s (on host %s) at %s: %w", site, f.Owner, f.Host, f.Time.Format(time.RFC3339), ErrFenced)
	}
	return nil
}

func defaultOwner(owner string) string {
	if owner != "" {
		return owner
	}
	host, _ := os.Hostname()
	return host
}

// Primary keeps the heartbeat of the active site.
type Primary struct {
	Remote *Remote
	Site   string
	// Owner names this instance of the site (default: the hostname). After
	// a promotion, only the promoted owner's Beat succeeds.
	Owner    string
	Interval time.Duration
	// StaleAfter: Run gives up (ErrFenced) after this many intervals without
	// a successful heartbeat, since a promotion could have happened unseen
	// (default 3, matching PromoteOptions).
	StaleAfter int
	Now        func() time.Time
	Logger     *slog.Logger
}

func (p *Primary) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// Beat checks the fence and writes one heartbeat.
func (p *Primary) Beat(ctx context.Context) error {
	if err := CheckFenced(ctx, p.Remote, p.Site, defaultOwner(p.Owner)); err != nil {
		return err
	}
	host, _ := os.Hostname()
	b, _ := json.Marshal(Heartbeat{Site: p.Site, Host: host, PID: os.Getpid(), Time: p.now().UTC(), Interval: p.Interval})
	if err := p.Remote.Put(ctx, heartbeatName(p.Site), bytes.NewReader(b)); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}

// Run beats every Interval until ctx ends (nil) or the site is fenced.
func (p *Primary) Run(ctx context.Context) error {
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stale := p.StaleAfter
	if stale <= 0 {
		stale = 3
	}
	last := p.now()
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	for {
		err := p.Beat(ctx)
		switch {
		case errors.Is(err, ErrFenced):
			return err
		case err != nil:
			log.Warn("heartbeat failed", "err", err)
			if p.now().Sub(last) > time.Duration(stale)*p.Interval {
				return fmt.Errorf("no heartbeat for %v, a standby may have been promoted: %w", p.now().Sub(last), ErrFenced)
			}
		default:
			last = p.now()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Replicator keeps a standby's replica store equal to the newest snapshot.
type Replicator struct {
	Remote   *Remote
	Site     string
	Replica  inventory.Store
	Interval time.Duration
	Logger   *slog.Logger

	applied string // name of the snapshot the replica holds
}

// Sync pulls the newest snapshot into the replica if it is not there yet.
// The replica is replaced in one step (atomic on bbolt).
func (r *Replicator) Sync(ctx context.Context) (name string, changed bool, err error) {
	latest, err := Latest(ctx, r.Remote, r.Site)
	if err != nil {
		return "", false, err
	}
	if latest.Name == r.applied {
		return latest.Name, false, nil
	}
	h, recs, err := Fetch(ctx, r.Remote, latest.Name)
	if err != nil {
		return "", false, err
	}
	if h.Site != r.Site {
		return "", false, fmt.Errorf("snapshot %s is of site %s, not %s", latest.Name, h.Site, r.Site)
	}
	if err := r.Replica.Restore(ctx, recs, inventory.RestoreOptions{Replace: true}); err != nil {
		return "", false, fmt.Errorf("replicate %s: %w", latest.Name, err)
	}
	r.applied = latest.Name
	if r.Logger != nil {
		r.Logger.Info("replica updated", "snapshot", latest.Name, "revision", h.Revision, "records", h.Records)
	}
	return latest.Name, true, nil
}

// Run syncs every Interval until ctx ends. Failed pulls are logged and
// retried: the replica keeps the last good snapshot meanwhile.
func (r *Replicator) Run(ctx context.Context) error {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		if _, _, err := r.Sync(ctx); err != nil && r.Logger != nil && ctx.Err() == nil {
			r.Logger.Warn("replica sync failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// PromoteOptions are what `metal promote` passes.
type PromoteOptions struct {
	Site string
	// Owner names the promoted instance (default: this hostname); its
	// Primary must use the same Owner.
	Owner string
	// StaleAfter is how many of the primary's heartbeat intervals must pass
	// without a heartbeat before promotion is allowed (default 3).
	StaleAfter int
	// Force promotes even while the primary looks alive.
	Force bool
	Now   func() time.Time
}

// Promote makes the standby the active site: it refuses while the primary's
// heartbeat is fresh (unless Force), then writes the fence file that stops
// the primary. It returns the last heartbeat seen (zero if none).
func Promote(ctx context.Context, r *Remote, opts PromoteOptions) (Heartbeat, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	stale := opts.StaleAfter
	if stale <= 0 {
		stale = 3
	}
	hb, ok, err := readJSON[Heartbeat](ctx, r, heartbeatName(opts.Site))
	if err != nil {
		return Heartbeat{}, fmt.Errorf("promote: read heartbeat: %w", err)
	}
	if ok {
		age := now().Sub(hb.Time)
		if limit := time.Duration(stale) * hb.Interval; age < limit && !opts.Force {
			return hb, fmt.Errorf("promote %s: primary %s (pid %d) wrote a heartbeat %v ago, less than %d intervals (%v); "+
				"stop it first, wait, or force: %w", opts.Site, hb.Host, hb.PID, age.Round(time.Second), stale, limit, ErrPrimaryAlive)
		}
	}
	host, _ := os.Hostname()
	b, _ := json.Marshal(Fence{Site: opts.Site, Owner: defaultOwner(opts.Owner), Host: host, Time: now().UTC(), Forced: opts.Force})
	if err := r.Put(ctx, fenceName(opts.Site), bytes.NewReader(b)); err != nil {
		return hb, fmt.Errorf("promote: write fence: %w", err)
	}
	return hb, nil
}
