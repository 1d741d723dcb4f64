package site

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// Volume is a RAID volume a machine's storage controller must hold:
//
//	raid "system" {
//	  level  = "RAID1"
//	  drives = ["0", "1"]    # by the BMC's drive Id or Name; or count = 2
//	  size   = "200GiB"      # default: all the drives hold
//	}
//
// The raid blocks of a machine are its whole layout: a volume the
// controller holds that the site does not declare is deleted, which is
// destructive, as is changing a volume that holds data.
type Volume struct {
	Name      string
	Level     string
	Drives    []string
	Count     int
	Bytes     int64 // 0: all the drives hold
	DeclRange hcl.Range
	ranges    map[string]hcl.Range
}

// RAIDLevels are the levels a raid block may ask for (Redfish RAIDType).
var RAIDLevels = []string{"RAID0", "RAID1", "RAID5", "RAID10"}

// Range returns the source range of one of the block's attributes, or its
// header.
func (v *Volume) Range(attr string) hcl.Range { return rangeOr(v.ranges, attr, v.DeclRange) }

// DriveCount is how many drives the volume spans.
func (v *Volume) DriveCount() int {
	if len(v.Drives) > 0 {
		return len(v.Drives)
	}
	return v.Count
}

// Layout is the volume as a plan shows it: "RAID1 on 2 drives, 200 GiB".
func (v *Volume) Layout() string {
	return VolumeLayout(v.Level, v.Drives, v.DriveCount(), v.Bytes)
}

// VolumeLayout renders a volume's layout: drives by name when they are
// named, else their count; the size unless it is all they hold (0).
func VolumeLayout(level string, drives []string, count int, bytes int64) string {
	s := fmt.Sprintf("%s on %d drives", level, count)
	if len(drives) > 0 {
		s = fmt.Sprintf("%s on drives %s", level, strings.Join(drives, ", "))
	}
	if bytes > 0 {
		s += ", " + sizeText(bytes)
	}
	return s
}

var raidSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "level", Required: true}, {Name: "drives"}, {Name: "count"}, {Name: "size"},
}}

var sizeRe = regexp.MustCompile(`^([0-9]+)\s*(MiB|GiB|TiB)$`)

var sizeUnits = map[string]int64{"MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}

func parseSize(s string) (int64, bool) {
	m := sizeRe.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || n <= 0 || n > 1<<62/sizeUnits[m[2]] {
		return 0, false
	}
	return n * sizeUnits[m[2]], true
}

func sizeText(b int64) string {
	for _, u := range []string{"TiB", "GiB", "MiB"} {
		if b%sizeUnits[u] == 0 {
			return strconv.FormatInt(b/sizeUnits[u], 10) + " " + u
		}
	}
	return strconv.FormatInt(b, 10) + " bytes"
}

// decodeRAID evaluates m's raid blocks for one instance.
func decodeRAID(e *evaluator, m *Machine, blocks []subBlock) {
	for _, rb := range blocks {
		attrs := rb.content.Attributes
		v := Volume{Name: rb.block.Labels[0], DeclRange: rb.block.DefRange, ranges: map[string]hcl.Range{}}
		for name, a := range attrs {
			v.ranges[name] = a.Expr.Range()
		}
		v.Level, _, _ = e.str(attrs["level"])
		v.Level = strings.ToUpper(v.Level)
		v.Drives = e.strList(attrs["drives"])
		if a := attrs["count"]; a != nil {
			v.Count, _ = e.integer(a, 1, 256)
		}
		if a := attrs["size"]; a != nil {
			if s, _, ok := e.str(a); ok {
				b, ok := parseSize(s)
				if !ok {
					e.diags = append(e.diags, errorAt(a.Expr.Range(), "Invalid volume size",
						"Machine %q: raid %q: size is a whole number of MiB, GiB or TiB, such as \"200GiB\", not %q.", m.Name, v.Name, s))
				}
				v.Bytes = b
			}
		}
		m.RAID = append(m.RAID, v)
	}
}

// validateRAID checks the shapes of a machine's raid blocks; whether its
// controller has the drives is for plan to ask the BMC.
func validateRAID(m *Machine) hcl.Diagnostics {
	var diags hcl.Diagnostics
	bad := func(r hcl.Range, summary, format string, args ...any) {
		diags = append(diags, errorAt(r, summary, "Machine %q: "+format, append([]any{m.Name}, args...)...))
	}
	seen := map[string]*Volume{}
	used := map[string]string{}
	for i := range m.RAID {
		v := &m.RAID[i]
		if prev, ok := seen[strings.ToLower(v.Name)]; ok {
			bad(v.DeclRange, "Duplicate volume", "raid %q is already declared at %s.", v.Name, where(prev.DeclRange))
			continue
		}
		seen[strings.ToLower(v.Name)] = v
		if !slices.Contains(RAIDLevels, v.Level) {
			bad(v.Range("level"), "Invalid RAID level", "raid %q: level must be one of %s, got %q.", v.Name, strings.Join(RAIDLevels, ", "), v.Level)
			continue
		}
		if (len(v.Drives) > 0) == (v.Count > 0) {
			bad(v.DeclRange, "Drives or count", "raid %q: give drives (the BMC's drive Ids or Names) or count (that many unused drives), one of them.", v.Name)
			continue
		}
		for _, d := range v.Drives {
			if other, ok := used[strings.ToLower(d)]; ok {
				bad(v.Range("drives"), "Drive in two volumes", "raid %q: drive %q is already in raid %q.", v.Name, d, other)
			}
			used[strings.ToLower(d)] = v.Name
		}
		n := v.DriveCount()
		if msg := levelFits(v.Level, n); msg != "" {
			bad(v.DeclRange, "Wrong drive count", "raid %q: %s.", v.Name, msg)
		}
	}
	if len(m.RAID) == 0 {
		return diags
	}
	switch {
	case m.BMC == nil:
		bad(m.RAID[0].DeclRange, "RAID without a BMC", "the raid volumes are built through the machine's BMC; add a bmc block with protocol = \"redfish\".")
	case m.BMC.Protocol == ProtocolIPMI:
		bad(m.RAID[0].DeclRange, "RAID needs Redfish", "IPMI has no standard way to build RAID volumes; use protocol = \"redfish\" (or \"auto\") if the BMC speaks it.")
	}
	return diags
}

// levelFits says what is wrong with a level over n drives, or "".
func levelFits(level string, n int) string {
	switch {
	case level == "RAID1" && n != 2:
		return fmt.Sprintf("RAID1 mirrors 2 drives, not %d", n)
	case level == "RAID5" && n < 3:
		return fmt.Sprintf("RAID5 needs 3 drives or more, not %d", n)
	case level == "RAID10" && (n < 4 || n%2 != 0):
		return fmt.Sprintf("RAID10 needs an even number of drives, 4 or more, not %d", n)
	}
	return ""
}
