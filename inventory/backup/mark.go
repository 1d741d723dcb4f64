package backup

import (
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

// Mark is the content of the local fence mark.
type Mark struct {
	Site   string    `json:"site"`
	Time   time.Time `json:"time"`
	Reason string    `json:"reason"`
}

// MarkPath is the file of the mark of site in stateDir.
func MarkPath(stateDir, site string) string {
	return filepath.Join(stateDir, "metal-"+site+".fenced")
}

// SetMark leaves the mark of site in stateDir, saying why.
func SetMark(stateDir, site string, cause error) error {
	b, _ := json.MarshalIndent(Mark{Site: site, Time: time.Now().UTC(), Reason: cause.Error()}, "", "  ")
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return fmt.Errorf("fence mark: %w", err)
	}
	if err := os.WriteFile(MarkPath(stateDir, site), append(b, '\n'), 0o644); err != nil {
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
