package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// The local fence mark. A primary learns that it was fenced from the SFTP
// directory, but a plain `metal apply` or `metal bmc off` on the same
// host never reads it. So a primary that stops as fenced (or whose lease
// ran out: a standby may have been promoted since) leaves a file in its
// state directory, and every verb that serves or changes machines refuses
// while it is there. `metal serve --backup-to` clears it once its first
// heartbeat is confirmed with no fence against it, and `metal promote`
// here clears it: in both cases this instance owns the site again.
//
// A promote that claimed the site but whose fence device did not confirm
// the old primary's host off leaves a mark too, naming its claim: this
// instance owns the site but must not serve while the old primary may.
// Only a promote that confirms the fence (or is told to do without)
// clears that one; a heartbeat confirms nothing about the old host.

// Mark is the content of the local fence mark.
type Mark struct {
	Site   string    `json:"site"`
	Time   time.Time `json:"time"`
	Reason string    `json:"reason"`
	// Claim is the claim (fence epoch) this instance made without its
	// fence confirmed; 0 for a fenced primary's mark.
	Claim int `json:"claim,omitempty"`
}

// MarkPath is the file of the mark of site in stateDir.
func MarkPath(stateDir, site string) string {
	return filepath.Join(stateDir, "metal-"+site+".fenced")
}

// SetMark leaves the mark of site in stateDir, saying why.
func SetMark(stateDir, site string, cause error) error {
	return writeMark(stateDir, Mark{Site: site, Time: time.Now().UTC(), Reason: cause.Error()})
}

// SetUnfencedMark leaves the mark of an instance that made claim but
// whose fence device did not confirm the old primary's host off (cause).
func SetUnfencedMark(stateDir, site string, claim int, cause error) error {
	return writeMark(stateDir, Mark{Site: site, Time: time.Now().UTC(), Reason: cause.Error(), Claim: claim})
}

// UnfencedClaim is the claim of site's unfenced mark in stateDir (see
// SetUnfencedMark), 0 if there is none.
func UnfencedClaim(stateDir, site string) int {
	var m *MarkedError
	if errors.As(CheckMark(stateDir, site), &m) {
		return m.Mark.Claim
	}
	return 0
}

func writeMark(stateDir string, m Mark) error {
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return fmt.Errorf("fence mark: %w", err)
	}
	if err := os.WriteFile(MarkPath(stateDir, m.Site), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("fence mark: %w", err)
	}
	return nil
}

// ClearMark removes the mark of site (none is fine).
func ClearMark(stateDir, site string) error {
	if err := os.Remove(MarkPath(stateDir, site)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("fence mark: %w", err)
	}
	return nil
}

// MarkedError: this instance of the site is fenced; it is ErrFenced too.
type MarkedError struct {
	Path string
	Mark Mark
}

func (e *MarkedError) Error() string {
	if e.Mark.Claim > 0 {
		return fmt.Sprintf("this instance of site %s claimed the site (claim %d) at %s, but must not serve yet: %s (%s says so).\n"+
			"The old primary's host may still run. Check that it is off, then run metal promote here again: it powers that host off again through the fence block's BMC "+
			"and serves once the BMC confirms it off; --accept-unfenced serves without that confirmation, trusting the old primary's lease",
			e.Mark.Site, e.Mark.Claim, e.Mark.Time.Local().Format(time.DateTime), e.Mark.Reason, e.Path)
	}
	return fmt.Sprintf("this instance of site %s is fenced since %s (%s): %s says so.\n"+
		"It must not serve or change machines: a standby may be serving the site. To follow that one, run metal standby here; "+
		"to take the site back, stop the other instance, then run metal promote here or metal serve --backup-to "+
		"(either clears the mark once the backup directory's fence names no one else). Delete %s by hand only if you know no other instance serves",
		e.Mark.Site, e.Mark.Time.Local().Format(time.DateTime), e.Mark.Reason, e.Path, e.Path)
}

func (e *MarkedError) Unwrap() error { return ErrFenced }

// CheckMark returns a *MarkedError if the mark of site is in stateDir.
func CheckMark(stateDir, site string) error {
	path := MarkPath(stateDir, site)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fence mark: %w", err)
	}
	var m Mark
	if err := json.Unmarshal(b, &m); err != nil {
		// Unreadable, still a mark: refusing is the safe side.
		m = Mark{Site: site, Reason: "unreadable mark: " + err.Error()}
	}
	return &MarkedError{Path: path, Mark: m}
}

// PromoteHere promotes the instance whose state directory is stateDir and
// keeps its mark in step: a claim whose fence was not confirmed leaves the
// mark that stops this instance's verbs (and makes the next promote here
// power the old primary off again); a promotion clears it, since this
// instance owns the site now.
func PromoteHere(ctx context.Context, r *Remote, stateDir string, opts PromoteOptions) (Promotion, error) {
	opts.Refence = UnfencedClaim(stateDir, opts.Site) > 0
	p, err := Promote(ctx, r, opts)
	var ue *UnfencedError
	if errors.As(err, &ue) {
		if merr := SetUnfencedMark(stateDir, opts.Site, ue.Claim, err); merr != nil {
			return p, fmt.Errorf("%w; and leaving the mark that stops this instance from serving: %w", err, merr)
		}
		return p, err
	}
	if err != nil {
		return p, err
	}
	return p, ClearMark(stateDir, opts.Site)
}
