package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/metal-dev/metal/inventory"
)

// Fencing. Beside the snapshots, the active instance keeps a heartbeat
// file (metal-<site>.heartbeat) fresh, and each promotion claims the next
// fence file (metal-<site>.fence-000001, -000002, ...); the claim of the
// highest number names the site's owner.
//
// The guarantee (the overlap of two serving instances is at most 0 s):
//
//   - The primary holds a lease of length L: it serves only while the last
//     heartbeat it confirmed is younger than L, measured on its own
//     monotonic clock from the moment before that heartbeat was written,
//     by a timer that no SFTP call can block (Primary.Run). A heartbeat is
//     confirmed when it was written and no fence was found after writing
//     it. Every SFTP call has a deadline (Remote.OpTimeout).
//   - Promote claims the next fence file atomically (Remote.Create: of two
//     promotes exactly one wins), then reads the heartbeat again and
//     succeeds only once its own clock is at least T + L + M, with T the
//     time in the newest heartbeat and M the clock-skew margin.
//   - The SFTP server orders the two: a heartbeat the primary confirmed
//     was written before its fence check, and the check came before the
//     claim (else it sees the fence and stops), so the standby's read
//     after the claim sees that heartbeat or a newer one.
//
// With the standby's clock at most S ahead of the primary's and the
// primary taking at most D to stop serving once its lease ends:
//
//	primary stops    <= T + L + D          (primary's clock)
//	standby serves   >= T + L + M - S      (the same instant, primary's clock)
//	overlap          <= D + S - M          <= 0 s whenever M >= S + D
//
// By default L = 3 intervals and M = DefaultMargin (60 s): NTP keeps S in
// milliseconds, D is milliseconds (cancelling the servers).

var (
	// ErrFenced: a standby was promoted, or may have been; this primary
	// must stop serving.
	ErrFenced = errors.New("site was promoted elsewhere (fenced)")
	// ErrLeaseExpired: the primary could not confirm a heartbeat within
	// its lease; it is fenced as well (errors.Is ErrFenced too).
	ErrLeaseExpired = errors.New("lease expired")
	// ErrPrimaryAlive: promote refused, the primary's heartbeat is fresh.
	ErrPrimaryAlive = errors.New("primary is alive")
	// ErrPromotedElsewhere: a concurrent promote claimed the site first.
	ErrPromotedElsewhere = errors.New("another instance was promoted first")
	// ErrFenceUnconfirmed: promote claimed the site, but the fence device
	// did not confirm the old primary's host off.
	ErrFenceUnconfirmed = errors.New("the fence device did not confirm the old primary's host off")
)

// DefaultMargin is the clock-skew margin M a standby waits beyond the
// primary's lease before it serves.
const DefaultMargin = 60 * time.Second

// Heartbeat is the content of the heartbeat file.
type Heartbeat struct {
	Site     string        `json:"site"`
	Owner    string        `json:"owner,omitempty"`
	Host     string        `json:"host"`
	PID      int           `json:"pid"`
	Time     time.Time     `json:"time"`
	Interval time.Duration `json:"interval"`
	// Lease is L: the writer serves no longer than L after Time.
	Lease time.Duration `json:"lease,omitempty"`
	// Revision is the store revision the writer holds.
	Revision int64 `json:"revision,omitempty"`
}

// LeaseLength is L of the heartbeat (3 intervals for a heartbeat that
// names none).
func (h Heartbeat) LeaseLength() time.Duration {
	if h.Lease > 0 {
		return h.Lease
	}
	return 3 * h.Interval
}

// Fence is the content of a fence file: one promotion.
type Fence struct {
	Site string `json:"site"`
	// Epoch numbers the promotions of the site; the highest is in force.
	Epoch int `json:"epoch"`
	// Owner is the site instance that is active now; every other primary
	// of the site is fenced.
	Owner  string    `json:"owner"`
	Host   string    `json:"host"`
	Time   time.Time `json:"time"`
	Forced bool      `json:"forced"`
}

func heartbeatName(site string) string { return "metal-" + site + ".heartbeat" }
func fenceName(site string, epoch int) string {
	return fmt.Sprintf("metal-%s.fence-%06d", site, epoch)
}

func readJSON[T any](ctx context.Context, r *Remote, name string) (T, bool, error) {
	var v T
	ok, err := r.exists(ctx, name)
	if err != nil || !ok {
		return v, false, err
	}
	data, err := r.readSigned(ctx, name)
	if err != nil {
		return v, false, err
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return v, false, fmt.Errorf("%s: %s: %w", r.target, name, err)
	}
	return v, true, nil
}

// CurrentFence is the fence in force (the highest epoch not forged); ok
// is false when the site was never promoted.
func CurrentFence(ctx context.Context, r *Remote, site string) (Fence, bool, error) {
	f, ok, _, err := fences(ctx, r, site)
	return f, ok, err
}

// fences finds the fence in force and the highest epoch any fence file
// takes (forged ones too: the next claim must be above them all). A
// forged fence is logged (readSigned) and passed over: it neither stops a
// primary nor names an owner.
func fences(ctx context.Context, r *Remote, site string) (cur Fence, ok bool, top int, err error) {
	files, err := r.Files(ctx)
	if err != nil {
		return Fence{}, false, 0, err
	}
	prefix := "metal-" + site + ".fence-"
	var epochs []int
	for _, f := range files {
		if rest, found := strings.CutPrefix(f.Name, prefix); found {
			if n, err := strconv.Atoi(rest); err == nil && n > 0 {
				epochs = append(epochs, n)
			}
		}
	}
	// Numerically: names sort as strings only up to six digits.
	slices.Sort(epochs)
	for i := len(epochs) - 1; i >= 0; i-- {
		top = max(top, epochs[i])
		f, found, err := readJSON[Fence](ctx, r, fenceName(site, epochs[i]))
		if errors.Is(err, ErrForged) || err == nil && !found {
			continue
		}
		if err != nil {
			return Fence{}, false, top, err
		}
		return f, true, top, nil
	}
	return Fence{}, false, top, nil
}

// CheckFenced returns ErrFenced (with who promoted, and when) if the site was
// promoted to an owner other than owner.
func CheckFenced(ctx context.Context, r *Remote, site, owner string) error {
	f, ok, err := CurrentFence(ctx, r, site)
	if err != nil {
		return fmt.Errorf("check fence: %w", err)
	}
	if ok && f.Owner != owner {
		return fmt.Errorf("site %s was promoted to %s (on host %s) at %s: %w", site, f.Owner, f.Host, f.Time.Format(time.RFC3339), ErrFenced)
	}
	return nil
}

// DefaultOwner names this host's instance of a site: the hostname and the
// start of /etc/machine-id, so two hosts with one name (clones, a rebuilt
// host) are two owners.
func DefaultOwner() string {
	host, _ := os.Hostname()
	b, err := os.ReadFile("/etc/machine-id")
	if id := strings.TrimSpace(string(b)); err == nil && len(id) >= 12 {
		return host + "/" + id[:12]
	}
	return host
}

func defaultOwner(owner string) string {
	if owner != "" {
		return owner
	}
	return DefaultOwner()
}

// Primary keeps the heartbeat of the active site, and its lease.
type Primary struct {
	Remote *Remote
	Site   string
	// Owner names this instance of the site (default DefaultOwner). After
	// a promotion, only the promoted owner's Beat succeeds.
	Owner    string
	Interval time.Duration
	// Lease is L (default StaleAfter intervals): Run returns
	// ErrLeaseExpired once no heartbeat was confirmed for that long.
	Lease time.Duration
	// StaleAfter is L in intervals when Lease is 0 (default 3).
	StaleAfter int
	// Now is the clock written into heartbeats (tests offset it to
	// simulate skew); the lease is measured on the monotonic clock.
	Now    func() time.Time
	Logger *slog.Logger
	// Keep is how many of the site's newest snapshots Serve keeps (0: all).
	Keep int
	// Key signs what Open's Remote writes and checks what it reads (nil:
	// nothing is authenticated); Encrypt seals the snapshots with it.
	Key     *Key
	Encrypt bool
	// StateDir holds the local fence mark (see SetMark; empty: no mark):
	// set when this primary is fenced or its lease runs out, cleared when
	// Open confirms a heartbeat with no fence against it.
	StateDir string

	mu       sync.Mutex
	until    time.Time // monotonic: the lease ends
	revision int64
}

// Open connects p to the backup directory t and writes a first heartbeat,
// which checks the fence: a primary that comes back after a standby was
// promoted learns it here (ErrFenced), before it serves a single lease.
func (p *Primary) Open(ctx context.Context, t Target, ssh SSHOptions) error {
	// A claim whose fence was not confirmed: the heartbeat would succeed
	// (the claim is this owner's), but says nothing of the old host.
	if p.StateDir != "" && UnfencedClaim(p.StateDir, p.Site) > 0 {
		return CheckMark(p.StateDir, p.Site)
	}
	r, err := Dial(ctx, t, ssh)
	if err != nil {
		return fmt.Errorf("backup directory: %w", err)
	}
	r.Key = p.Key
	p.Remote = r
	if err := p.Beat(ctx); err != nil {
		r.Close()
		if errors.Is(err, ErrFenced) {
			p.mark(err)
			return fmt.Errorf("%w\nThis instance no longer owns the site: the promoted standby serves it. "+
				"Run metal standby here to follow it, or promote this one back (metal promote) once that one is stopped", err)
		}
		return fmt.Errorf("first heartbeat: %w", err)
	}
	if p.StateDir != "" {
		if err := ClearMark(p.StateDir, p.Site); err != nil {
			r.Close()
			return err
		}
	}
	return nil
}

// mark leaves the local fence mark, if p has a StateDir.
func (p *Primary) mark(cause error) {
	if p.StateDir == "" {
		return
	}
	if err := SetMark(p.StateDir, p.Site, cause); err != nil && p.Logger != nil {
		p.Logger.Error("could not leave the fence mark; verbs on this host will not know it is fenced", "err", err)
	}
}

// Serve is the primary of a disaster-recovery pair while it serves the
// site: it beats (Run) and writes a snapshot of store every Interval when
// the store changed, keeping Keep, until ctx ends (nil) or Run ends (an
// error wrapping ErrFenced or ErrLeaseExpired: the caller must stop
// serving). A failed snapshot is logged and tried again next interval.
// It closes the Remote.
func (p *Primary) Serve(ctx context.Context, store inventory.Store) error {
	defer p.Remote.Close()
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	beats := make(chan error, 1)
	go func() { beats <- p.Run(ctx) }()
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	var written int64 // the store revision of the last snapshot written
	for {
		// The snapshot runs aside: on a cut link an upload hangs until its
		// deadline (OpTimeout, 30 s), and the end of the lease must stop
		// the serving at once, not after it. The deferred Close and
		// cancel end an upload left behind.
		var (
			res  Result
			err  error
			done = make(chan struct{})
		)
		go func() {
			defer close(done)
			res, err = Backup(ctx, store, p.Remote, Options{Site: p.Site, Keep: p.Keep, Unless: written, Encrypt: p.Encrypt})
		}()
		select {
		case err := <-beats:
			if err != nil {
				p.mark(err)
			}
			return err
		case <-done:
		}
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("snapshot to the backup directory failed; trying again next interval", "to", p.Remote.Target(), "err", err)
		case err == nil && res.Unchanged:
			log.Debug("store unchanged; no snapshot", "revision", res.Header.Revision)
		case err == nil:
			written = res.Header.Revision
			p.SetRevision(written)
			log.Debug("snapshot written", "name", res.Name, "revision", res.Header.Revision)
		}
		select {
		case err := <-beats:
			if err != nil {
				p.mark(err)
			}
			return err
		case <-t.C:
		}
	}
}

func (p *Primary) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// LeaseLength is L.
func (p *Primary) LeaseLength() time.Duration {
	if p.Lease > 0 {
		return p.Lease
	}
	n := p.StaleAfter
	if n <= 0 {
		n = 3
	}
	return time.Duration(n) * p.Interval
}

// Until is when the lease ends (zero before the first confirmed beat).
func (p *Primary) Until() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.until
}

// SetRevision is the store revision the next heartbeats carry.
func (p *Primary) SetRevision(rev int64) {
	p.mu.Lock()
	p.revision = rev
	p.mu.Unlock()
}

// Beat checks the fence, writes one heartbeat and checks the fence again;
// only then is the lease extended to L after the moment the beat started.
func (p *Primary) Beat(ctx context.Context) error {
	owner := defaultOwner(p.Owner)
	if err := CheckFenced(ctx, p.Remote, p.Site, owner); err != nil {
		return err
	}
	started := time.Now()
	p.mu.Lock()
	rev := p.revision
	p.mu.Unlock()
	host, _ := os.Hostname()
	b, _ := json.Marshal(Heartbeat{Site: p.Site, Owner: owner, Host: host, PID: os.Getpid(), Time: p.now().UTC(),
		Interval: p.Interval, Lease: p.LeaseLength(), Revision: rev})
	if err := p.Remote.writeSigned(ctx, heartbeatName(p.Site), append(b, '\n'), false, false); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	if err := CheckFenced(ctx, p.Remote, p.Site, owner); err != nil {
		return err
	}
	p.mu.Lock()
	if until := started.Add(p.LeaseLength()); until.After(p.until) {
		p.until = until
	}
	p.mu.Unlock()
	return nil
}

// Run beats every Interval until ctx ends (nil), the site is fenced
// (ErrFenced), or the lease ends with no heartbeat confirmed (an error
// that is both ErrLeaseExpired and ErrFenced). The lease is watched by a
// timer of its own: a beat blocked on a dead link does not delay it. Call
// Beat once before Run: without a confirmed beat there is no lease.
func (p *Primary) Run(ctx context.Context) error {
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fenced := make(chan error, 1)
	go func() {
		t := time.NewTicker(p.Interval)
		defer t.Stop()
		// The first beat goes at once: the lease the caller's Beat began
		// may be nearly spent by the time Run starts (metal serve builds
		// the agent's initramfs between Open and Serve), and waiting an
		// Interval first would let it run out.
		for first := true; ; first = false {
			if !first {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
			err := p.Beat(ctx)
			switch {
			case errors.Is(err, ErrFenced):
				fenced <- err
				return
			case err != nil && ctx.Err() == nil:
				log.Warn("heartbeat failed", "err", err, "lease_left", time.Until(p.Until()).Round(time.Millisecond))
			}
		}
	}()
	expiry := time.NewTimer(time.Until(p.Until()))
	defer expiry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-fenced:
			return err
		case <-expiry.C:
			left := time.Until(p.Until())
			if left > 0 {
				expiry.Reset(left)
				continue
			}
			return fmt.Errorf("no heartbeat confirmed within the lease (%v): a standby may be promoted after it: %w: %w",
				p.LeaseLength(), ErrLeaseExpired, ErrFenced)
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
	// Synced, when set, is told each snapshot Run brings into the replica.
	Synced func(name string)

	applied string          // name of the snapshot the replica holds
	refused map[string]bool // forged snapshots, not downloaded again
}

// Sync pulls the newest snapshot that is not forged into the replica if it
// is not there yet. A forged one (see Key) is logged and passed over for
// good: the replica keeps the newest genuine state. The replica is
// replaced in one step (atomic on bbolt).
func (r *Replicator) Sync(ctx context.Context) (name string, changed bool, err error) {
	if r.refused == nil {
		r.refused = map[string]bool{}
	}
	name, h, recs, err := fetchNewest(ctx, r.Remote, r.Site, r.applied, r.refused)
	if err != nil {
		return "", false, err
	}
	if name == r.applied {
		return name, false, nil
	}
	if h.Site != r.Site {
		return "", false, fmt.Errorf("snapshot %s is of site %s, not %s", name, h.Site, r.Site)
	}
	if err := r.Replica.Restore(ctx, recs, inventory.RestoreOptions{Replace: true}); err != nil {
		return "", false, fmt.Errorf("replicate %s: %w", name, err)
	}
	r.applied = name
	if r.Logger != nil {
		r.Logger.Info("replica updated", "snapshot", name, "revision", h.Revision, "records", h.Records)
	}
	return name, true, nil
}

// Run syncs now and then every Interval until ctx ends. Failed pulls are
// logged and retried: the replica keeps the last good snapshot meanwhile.
func (r *Replicator) Run(ctx context.Context) error {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		name, changed, err := r.Sync(ctx)
		switch {
		case err != nil && r.Logger != nil && ctx.Err() == nil:
			r.Logger.Warn("replica sync failed; keeping the last good snapshot", "err", err)
		case changed && r.Synced != nil:
			r.Synced(name)
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
	// Owner names the promoted instance (default DefaultOwner); its
	// Primary must use the same Owner.
	Owner string
	// Margin is M, the clock-skew margin waited beyond the primary's lease
	// (default DefaultMargin); it must exceed the skew between the hosts'
	// clocks.
	Margin time.Duration
	// Force claims the site even while the primary's heartbeat is fresh,
	// and does not wait out its lease: for a primary known to be off.
	Force bool
	// PowerOff, when set, powers the old primary's host off through its
	// BMC (the site's fence block) and returns nil only once the BMC
	// confirms it is off. It is called once the claim is made: then the
	// old primary is stopped whatever it saw of the fence, and Promote
	// does not wait out its lease. If it fails, Promote returns an
	// UnfencedError when FenceRequired; otherwise an unforced Promote
	// waits as without it.
	PowerOff func(ctx context.Context) error
	// FenceRequired: serving needs PowerOff's confirmation (the site has
	// a fence device and the operator did not waive it).
	FenceRequired bool
	// Refence: this owner's claim was made but its fence not confirmed
	// (an earlier Promote's UnfencedError): an Already promotion powers
	// the old primary off again, and waits as a fresh one does.
	Refence bool
	Now     func() time.Time
	// Sleep waits d (default: a timer, ended by ctx).
	Sleep func(ctx context.Context, d time.Duration) error
}

// Promotion says what Promote did.
type Promotion struct {
	Fence Fence
	// Heartbeat is the newest heartbeat seen (zero if none).
	Heartbeat Heartbeat
	// Waited is how long Promote waited, after its claim, for the lease
	// of a heartbeat written meanwhile to run out.
	Waited time.Duration
	// Already: this owner held the site already; nothing was claimed.
	Already bool
	// PoweredOff: PowerOff confirmed the old primary's host off.
	// PowerOffErr is why it did not, if it was tried.
	PoweredOff  bool
	PowerOffErr error
}

// PrimaryAliveError is ErrPrimaryAlive with how long to wait.
type PrimaryAliveError struct {
	Heartbeat Heartbeat
	Age, Wait time.Duration
	Margin    time.Duration
}

func (e *PrimaryAliveError) Error() string {
	return fmt.Sprintf("primary %s on %s (pid %d) wrote a heartbeat %v ago; it may serve until its lease (%v) ends, "+
		"and this standby waits the clock margin (%v) beyond it: promote is possible in %v (or stop it and force): %v",
		e.Heartbeat.Owner, e.Heartbeat.Host, e.Heartbeat.PID, e.Age.Round(time.Millisecond), e.Heartbeat.LeaseLength(), e.Margin,
		e.Wait.Round(time.Millisecond), ErrPrimaryAlive)
}

func (e *PrimaryAliveError) Unwrap() error { return ErrPrimaryAlive }

// UnfencedError: Promote claimed the site (Claim) but PowerOff failed,
// and FenceRequired: the promoted instance must not serve yet, since the
// old primary's host may still run. It is ErrFenceUnconfirmed.
type UnfencedError struct {
	Claim int
	Err   error
}

func (e *UnfencedError) Error() string {
	return fmt.Sprintf("claimed the site (claim %d), but %v: %v", e.Claim, ErrFenceUnconfirmed, e.Err)
}

func (e *UnfencedError) Unwrap() []error { return []error{ErrFenceUnconfirmed, e.Err} }

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Promote makes the standby the active site. Unless forced it refuses
// while the newest heartbeat's lease plus the margin has not run out
// (PrimaryAliveError). It then claims the next fence file atomically (of
// concurrent promotes one wins; the others get ErrPromotedElsewhere naming
// the winner), reads the heartbeat again, and waits out the lease of one
// written meanwhile: when it returns, the old primary has stopped serving
// (see the guarantee above).
func Promote(ctx context.Context, r *Remote, opts PromoteOptions) (Promotion, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	sleep := opts.Sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	margin := opts.Margin
	if margin <= 0 {
		margin = DefaultMargin
	}
	owner := defaultOwner(opts.Owner)
	var res Promotion
	cur, promoted, top, err := fences(ctx, r, opts.Site)
	if err != nil {
		return res, fmt.Errorf("promote: %w", err)
	}
	if promoted && cur.Owner == owner {
		res.Fence, res.Already = cur, true
		if !opts.Refence || opts.PowerOff == nil {
			return res, nil
		}
	}
	wait := func() (time.Duration, error) {
		hb, ok, err := readJSON[Heartbeat](ctx, r, heartbeatName(opts.Site))
		if errors.Is(err, ErrForged) {
			// Neither a sign of life nor of death: the primary's real
			// last beat is unknown, so its lease end is too.
			return 0, fmt.Errorf("promote: the heartbeat is refused (%w): when the primary last beat is unknown. "+
				"Check that both hosts hold the same --key; if the primary is known to be off (or a fence block powers it off), promote with --force", err)
		}
		if err != nil {
			return 0, fmt.Errorf("promote: read heartbeat: %w", err)
		}
		if !ok || hb.Owner == owner && hb.Owner != "" {
			return 0, nil
		}
		res.Heartbeat = hb
		age := now().Sub(hb.Time)
		return hb.LeaseLength() + margin - age, nil
	}
	if !opts.Force && !res.Already {
		w, err := wait()
		if err != nil {
			return res, err
		}
		// An instance promoted a moment ago serves before its first
		// heartbeat: its claim counts as one.
		if promoted && cur.Owner != owner {
			if fw := res.Heartbeat.LeaseLength() + margin - now().Sub(cur.Time); fw > 0 {
				return res, fmt.Errorf("promote %s: %s (on host %s) claimed the site %v ago; promote is possible in %v unless it beats: %w",
					opts.Site, cur.Owner, cur.Host, now().Sub(cur.Time).Round(time.Millisecond), fw.Round(time.Millisecond), ErrPromotedElsewhere)
			}
		}
		if w > 0 {
			return res, &PrimaryAliveError{Heartbeat: res.Heartbeat, Age: now().Sub(res.Heartbeat.Time), Wait: w, Margin: margin}
		}
	}
	if !res.Already {
		host, _ := os.Hostname()
		f := Fence{Site: opts.Site, Epoch: max(cur.Epoch, top) + 1, Owner: owner, Host: host, Time: now().UTC(), Forced: opts.Force}
		b, _ := json.Marshal(f)
		if err := r.writeSigned(ctx, fenceName(opts.Site, f.Epoch), append(b, '\n'), false, true); err != nil {
			if !errors.Is(err, ErrExists) {
				return res, fmt.Errorf("promote: claim: %w", err)
			}
			won, _, rerr := readJSON[Fence](ctx, r, fenceName(opts.Site, f.Epoch))
			if rerr != nil {
				return res, fmt.Errorf("promote: claim %d taken, and reading it: %w", f.Epoch, rerr)
			}
			return res, fmt.Errorf("promote %s: %s (on host %s) claimed the site at %s: %w",
				opts.Site, won.Owner, won.Host, won.Time.Format(time.RFC3339), ErrPromotedElsewhere)
		}
		res.Fence = f
	}
	if opts.PowerOff != nil {
		if res.PowerOffErr = opts.PowerOff(ctx); res.PowerOffErr == nil {
			res.PoweredOff = true
			wait() // only to say whom it stopped
			return res, nil
		}
		if opts.FenceRequired {
			wait() // only to say whom it may leave running
			return res, &UnfencedError{Claim: res.Fence.Epoch, Err: res.PowerOffErr}
		}
	}
	if opts.Force {
		// Not waited for: only to say whom the force may leave serving.
		wait()
		return res, nil
	}
	// A heartbeat confirmed before the claim may have been written after
	// the first read: wait out its lease too.
	w, err := wait()
	if err != nil {
		return res, err
	}
	if w > 0 {
		res.Waited = w
		if err := sleep(ctx, w); err != nil {
			return res, fmt.Errorf("promote: claimed the site, waiting %v for the old primary's lease: %w", w, err)
		}
	}
	return res, nil
}
