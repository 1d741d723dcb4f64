package view

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/metal-dev/metal/inventory/backup"
)

// Backup says what `metal backup` wrote to target and pruned.
func Backup(w io.Writer, target string, res backup.Result) {
	fmt.Fprintf(w, "Snapshot %s written to %s: %d records at revision %d, %s.\n",
		res.Name, target, res.Header.Records, res.Header.Revision, Bytes(uint64(res.Size)))
	if len(res.Deleted) > 0 {
		fmt.Fprintf(w, "Deleted %d older: %s\n", len(res.Deleted), strings.Join(res.Deleted, ", "))
	}
}

// Promotion is what `metal promote` tells of p.
type Promotion struct {
	Site    string
	Records int
	// FenceDevice is the fence block's BMC address; Fenced says the site
	// has a fence block.
	FenceDevice string
	Fenced      bool
	Force       bool
	Margin      time.Duration
}

// Claiming says, before the claim, how the old primary will be stopped.
func (v Promotion) Claiming(w io.Writer) {
	switch {
	case v.Fenced:
		fmt.Fprintf(w, "Claiming site %s; once claimed, powering the old primary's host off through its BMC (%s).\n", v.Site, v.FenceDevice)
	case !v.Force:
		fmt.Fprintf(w, "Claiming site %s; once claimed, waiting out the lease of a primary heard from meanwhile (plus a margin of %v for clock skew).\n", v.Site, v.Margin)
	}
}

// Promoted says what the promotion p did and what is known of the old
// primary.
func (v Promotion) Promoted(w io.Writer, p backup.Promotion) {
	if p.Already && !p.PoweredOff && p.PowerOffErr == nil {
		fmt.Fprintf(w, "Site %s is already active here (%s, claim %d of %s).\n", v.Site, p.Fence.Owner, p.Fence.Epoch, p.Fence.Time.Local().Format(time.DateTime))
		return
	}
	fmt.Fprintf(w, "Site %s promoted: %s is now its active instance (claim %d, %d records in its store).\n", v.Site, p.Fence.Owner, p.Fence.Epoch, v.Records)
	hb := p.Heartbeat
	switch {
	case p.PoweredOff:
		fmt.Fprintf(w, "The old primary's host was powered off through its BMC (%s), which confirms it is off: it serves nothing, whatever it saw of the claim.\n", v.FenceDevice)
		return
	case p.PowerOffErr != nil:
		fmt.Fprintf(w, "The fence device (BMC %s) did not confirm the old primary's host off: %v\n", v.FenceDevice, p.PowerOffErr)
	case !v.Fenced:
		fmt.Fprintf(w, "No fence block in the site file: metal did not power the old primary's host off. It relies on the primary stopping itself "+
			"when its lease ends, which needs its clock and timers to work. A fence block naming that host's BMC makes promote power it off and confirm.\n")
	}
	switch {
	case hb.Time.IsZero():
	case v.Force:
		fmt.Fprintf(w, "Forced: the primary %s on %s (pid %d, last heartbeat %s ago) may still be serving: metal cannot guarantee it stopped. "+
			"It stops once its lease (%v after its last heartbeat) ends or it sees the claim; power it off to be sure.\n",
			hb.Owner, hb.Host, hb.PID, time.Since(hb.Time).Round(time.Second), hb.LeaseLength())
	default:
		fmt.Fprintf(w, "The primary %s on %s (pid %d, last heartbeat %s ago) is fenced: its lease (%v) ended %v before this promote (margin %v).\n",
			hb.Owner, hb.Host, hb.PID, time.Since(hb.Time).Round(time.Second), hb.LeaseLength(), v.Margin, v.Margin)
	}
}
