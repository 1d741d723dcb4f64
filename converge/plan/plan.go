// Package plan computes what must change to bring observed machines to the
// state a site declares. Compute is a pure function: it reads the desired
// site and what the inventory observed, and returns data. Applying a plan is
// another package's job.
package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/metal-dev/metal/site"
)

// Action is what a plan does to one machine.
type Action string

const (
	NoOp    Action = "no-op"
	Create  Action = "create"  // provision a machine new to metal
	Update  Action = "update"  // change power, labels or BMC settings in place
	Replace Action = "replace" // reprovision: the disk is rewritten
	Delete  Action = "delete"  // deprovision: power off, wipe intent
)

// Value is one attribute value as the plan shows it. Sensitive values carry
// a digest in Text (so changes are still detected) and are never printed.
type Value struct {
	Text      string `json:"value,omitempty"`
	Sensitive bool   `json:"sensitive,omitempty"`
	// Pending, on an observed hardware setting, is the value its BMC has
	// staged for the next reset ("" when none).
	Pending string `json:"pending,omitempty"`
}

// Finding is something a plan noticed about a machine that is not a
// change: a BMC whose settings could not be read, an attribute its BMC
// does not know, hardware that drifted.
type Finding struct {
	Machine string `json:"machine"`
	Message string `json:"message"`
}

// Attributes are a machine's declared attributes, flattened to names such
// as "ip", "labels.rack" or "bmc.address". The inventory stores the
// attributes it last applied, so the next plan can diff against them.
type Attributes map[string]Value

// AttrChange is one attribute's before and after; nil means absent.
type AttrChange struct {
	Name          string `json:"name"`
	Before        *Value `json:"before"`
	After         *Value `json:"after"`
	ForcesReplace bool   `json:"forces_replace,omitempty"`
	// Destroys marks an in-place change that cannot be undone safely (a
	// firmware downgrade, a RAID volume rebuilt or deleted): apply needs
	// --allow-destroy for it.
	Destroys bool `json:"destroys,omitempty"`
}

// Change is the plan for one machine.
type Change struct {
	Machine string       `json:"machine"`
	Action  Action       `json:"action"`
	Attrs   []AttrChange `json:"attributes,omitempty"`
}

// Summary counts the changes by action.
type Summary struct {
	Create  int `json:"create"`
	Update  int `json:"update"`
	Replace int `json:"replace"`
	Delete  int `json:"delete"`
	NoOp    int `json:"no_op"`
}

// Plan is the whole set of changes for a site.
type Plan struct {
	Site    string   `json:"site"`
	Changes []Change `json:"changes"`
	Summary Summary  `json:"summary"`
	// Digest identifies the plan's content; a saved plan is applied only if
	// recomputing it gives the same digest.
	Digest string `json:"digest"`
	// SiteFile and SiteDigest, set on a saved plan, name the site file it
	// was computed from and the digest of that file's content, so that
	// applying the saved plan reloads the same file and refuses an edited
	// one.
	SiteFile   string `json:"site_file,omitempty"`
	SiteDigest string `json:"site_digest,omitempty"`
	// Targets, when set, are the machines the plan was limited to.
	Targets []string `json:"targets,omitempty"`
	// Findings are what the plan's caller noticed while observing the
	// machines. They are not part of the digest.
	Findings []Finding `json:"findings,omitempty"`
	// HardwareRefreshed says the hardware settings were observed from
	// each machine's BMC rather than from what metal last applied; a plan
	// is checked against one recomputed the same way.
	HardwareRefreshed bool `json:"hardware_refreshed,omitempty"`
}

// HasChanges reports whether applying the plan would do anything.
func (p *Plan) HasChanges() bool {
	s := p.Summary
	return s.Create+s.Update+s.Replace+s.Delete > 0
}

// replaceAttrs are the attributes whose change means rewriting the disk.
var replaceAttrs = map[string]bool{
	"mac": true, "image": true, "image.source": true, "disk": true,
	"ssh_authorized_keys": true, "user_data": true,
}

// Compute diffs the desired site against observed attributes by machine
// name. Machines only observed are deleted; machines only desired created.
// Changes come in machine-name order so a plan reads (and hashes) the same
// every time.
func Compute(desired *site.Site, observed map[string]Attributes) *Plan {
	p := &Plan{Site: desired.Name, Changes: make([]Change, 0, len(desired.Machines))}
	seen := make(map[string]bool, len(desired.Machines))
	for _, m := range desired.Machines {
		seen[m.Name] = true
		after := MachineAttributes(desired, m)
		before, ok := observed[m.Name]
		if !ok {
			p.Changes = append(p.Changes, Change{Machine: m.Name, Action: Create, Attrs: diff(nil, after)})
			continue
		}
		attrs := diff(before, after)
		action := NoOp
		for _, a := range attrs {
			if a.ForcesReplace {
				action = Replace
				break
			}
			action = Update
		}
		p.Changes = append(p.Changes, Change{Machine: m.Name, Action: action, Attrs: attrs})
	}
	for name, before := range observed {
		if !seen[name] {
			p.Changes = append(p.Changes, Change{Machine: name, Action: Delete, Attrs: diff(before, nil)})
		}
	}
	sort.Slice(p.Changes, func(i, j int) bool { return p.Changes[i].Machine < p.Changes[j].Machine })
	p.summarize()
	return p
}

// summarize counts the changes and computes the digest.
func (p *Plan) summarize() {
	p.Summary = Summary{}
	for _, c := range p.Changes {
		switch c.Action {
		case Create:
			p.Summary.Create++
		case Update:
			p.Summary.Update++
		case Replace:
			p.Summary.Replace++
		case Delete:
			p.Summary.Delete++
		default:
			p.Summary.NoOp++
		}
	}
	p.Digest = digest(p)
}

// Only limits the plan to the named machines (`--target`). A name the plan
// does not know is an error, so a typo never turns into "no changes".
func (p *Plan) Only(names []string) (*Plan, error) {
	if len(names) == 0 {
		return p, nil
	}
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := &Plan{Site: p.Site, SiteFile: p.SiteFile, SiteDigest: p.SiteDigest, HardwareRefreshed: p.HardwareRefreshed}
	for _, c := range p.Changes {
		if want[c.Machine] {
			out.Changes = append(out.Changes, c)
			delete(want, c.Machine)
		}
	}
	if len(want) > 0 {
		missing := make([]string, 0, len(want))
		for n := range want {
			missing = append(missing, n)
		}
		sort.Strings(missing)
		return nil, fmt.Errorf("no machine %s in site %q or its inventory", strings.Join(missing, ", "), p.Site)
	}
	for _, f := range p.Findings {
		if slices.Contains(names, f.Machine) {
			out.Findings = append(out.Findings, f)
		}
	}
	out.Targets = append([]string(nil), names...)
	sort.Strings(out.Targets)
	out.summarize()
	return out, nil
}

// Destructive returns the changes that rewrite or erase a disk
// (reprovision and deprovision) or change hardware in a way that cannot
// be undone safely (a firmware downgrade), which apply carries out only
// when told so explicitly.
func (p *Plan) Destructive() []Change {
	var out []Change
	for _, c := range p.Changes {
		if c.Action == Replace || c.Action == Delete || slices.ContainsFunc(c.Attrs, func(a AttrChange) bool { return a.Destroys }) {
			out = append(out, c)
		}
	}
	return out
}

// diff lists the attributes that differ, in name order. With before nil
// every attribute is new; with after nil every one goes away.
func diff(before, after Attributes) []AttrChange {
	var out []AttrChange
	for _, n := range keys(before, after) {
		b, bok := before[n]
		a, aok := after[n]
		if bok && aok && a == b {
			continue
		}
		c := AttrChange{Name: n}
		if bok {
			c.Before = &b
		}
		if aok {
			c.After = &a
		}
		// Creating or deleting a whole machine replaces nothing.
		c.ForcesReplace = before != nil && after != nil && replaceAttrs[n]
		c.Destroys = destroys(n, before, after, c.Before, c.After)
		out = append(out, c)
	}
	return out
}

// destroys says whether an in-place change of attribute n loses what
// cannot be had back: a firmware downgrade, a RAID volume rebuilt or
// deleted (its data goes with it).
func destroys(n string, before, after Attributes, b, a *Value) bool {
	if before == nil || after == nil || b == nil {
		return false
	}
	switch {
	case strings.HasPrefix(n, FirmwarePrefix):
		return a != nil && VersionLess(a.Text, b.Text)
	case strings.HasPrefix(n, RAIDPrefix):
		return a == nil || a.Text != b.Text
	}
	return false
}

// digest hashes what the plan would do, a change at a time: encoding a
// 10,000-machine plan whole only to hash it cost more than computing it.
func digest(p *Plan) string {
	h := sha256.New()
	line := func(v any) {
		b, _ := json.Marshal(v)
		h.Write(b)
		h.Write([]byte{'\n'})
	}
	line(p.Site)
	for i := range p.Changes {
		line(&p.Changes[i])
	}
	line(p.Targets)
	return hex.EncodeToString(h.Sum(nil))
}
