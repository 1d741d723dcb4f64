package console

import (
	"context"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/metal-dev/metal/inventory"
)

// Elevation geometry, in SVG user units: one rack unit is unitH high.
const (
	unitH     = 22
	rackW     = 220
	uLabelW   = 26 // the U numbers left of the rack
	gridCols  = 8  // cells a row in the grid of a site without racks
	gridCellW = 120
)

// rackUnit is one machine drawn in a rack (or the site's grid).
type rackUnit struct {
	M    inventory.Machine
	Slot int // 0: no position label
	Last *inventory.Event
	// X, Y, W, H place it in its rack's SVG.
	X, Y, W, H int
}

// Href is the machine's page.
func (u rackUnit) Href() string { return Prefix + "machines/" + url.PathEscape(u.M.Name) }

// LedX, LedY and TextX, TextY place the state light and the name.
func (u rackUnit) LedX() int  { return u.X + 9 }
func (u rackUnit) LedY() int  { return u.Y + u.H/2 }
func (u rackUnit) TextX() int { return u.X + 18 }
func (u rackUnit) TextY() int { return u.Y + u.H/2 + 5 }

// Title is the hover text: what an operator asks of a machine first.
func (u rackUnit) Title() string {
	var b strings.Builder
	b.WriteString(u.M.Name + ": " + string(u.M.State))
	power := string(u.M.Power)
	if power == "" {
		power = "unknown"
	}
	b.WriteString(", power " + power)
	if !u.M.PowerAt.IsZero() {
		// A reading, not a live view: the BMC was asked then (a VM whose
		// guest shut down is off, though its QEMU still runs).
		b.WriteString(" (seen " + u.M.PowerAt.UTC().Format("15:04:05 UTC") + ")")
	}
	if u.Slot > 0 {
		b.WriteString(", U" + strconv.Itoa(u.Slot))
	}
	if u.Last != nil {
		b.WriteString("\nlast event: " + string(u.Last.Kind) + " " + u.Last.Message)
	}
	return b.String()
}

// rack is one rack's elevation: machines with a slot at their height
// (U1 at the bottom, as racks are numbered), the others stacked under it.
type rack struct {
	Name  string
	Units int // height in U
	// Ticks are the U numbers drawn beside the rack, with their Y.
	Ticks    []rackTick
	Placed   []rackUnit
	Unplaced []rackUnit
	W, H     int // the SVG's size
	Failed   int
	// FrameX, FrameW, FrameH draw the rack's outline (racks only).
	FrameX, FrameW, FrameH int
}

type rackTick struct{ U, Y int }

type racksView struct {
	// By is the label machines are grouped by ("" for one grid).
	By        string
	RolloutBy string
	States    []inventory.State
	Racks     []rack
	Grid      *rack // a site without rack labels
	Stream    string
}

// rackLabel is the label that names a machine's rack: "rack" where
// machines carry it, else the rollout's by label (the failure domain the
// site already rolls out by).
func (c *console) rackLabel(ms []inventory.Machine) string {
	for _, m := range ms {
		if m.Identity.Labels["rack"] != "" {
			return "rack"
		}
	}
	if s := c.site(); s != nil {
		if by := s.Rollout.By; by != "" {
			for _, m := range ms {
				if m.Identity.Labels[by] != "" {
					return by
				}
			}
		}
	}
	return ""
}

// slotOf reads a machine's position in its rack: the "slot" or "u" label,
// a positive number of rack units from the bottom.
func slotOf(m inventory.Machine) int {
	for _, k := range []string{"slot", "u", "U"} {
		if v, ok := m.Identity.Labels[k]; ok {
			n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(v), "U"), "u"))
			if err == nil && n > 0 && n <= 100 {
				return n
			}
		}
	}
	return 0
}

func (c *console) racksView(ctx context.Context) (racksView, error) {
	ms, _, err := c.opts.Store.Machines(ctx)
	if err != nil {
		return racksView{}, err
	}
	last, err := c.last.update(ctx, c.opts.Store)
	if err != nil {
		return racksView{}, err
	}
	v := racksView{By: c.rackLabel(ms), States: allStates, Stream: Prefix + "stream?view=racks"}
	if s := c.site(); s != nil {
		v.RolloutBy = s.Rollout.By
	}
	if v.By == "" {
		g := gridOf(ms, last)
		v.Grid = &g
		return v, nil
	}
	byRack := map[string][]inventory.Machine{}
	for _, m := range ms {
		name := m.Identity.Labels[v.By]
		if name == "" {
			name = "(no " + v.By + ")"
		}
		byRack[name] = append(byRack[name], m)
	}
	names := make([]string, 0, len(byRack))
	for n := range byRack {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v.Racks = append(v.Racks, elevation(n, byRack[n], last))
	}
	return v, nil
}

// elevation draws one rack: as tall as its highest slot (at least as many
// U as it has machines, and 8), machines without a slot stacked below it.
// Two machines claiming one slot are both drawn, the later one unplaced,
// so none hides.
func elevation(name string, ms []inventory.Machine, last func(inventory.Machine) *inventory.Event) rack {
	r := rack{Name: name, Units: max(8, len(ms))}
	taken := map[int]bool{}
	var loose []inventory.Machine
	for _, m := range ms {
		s := slotOf(m)
		if s == 0 || taken[s] {
			loose = append(loose, m)
			continue
		}
		taken[s] = true
		r.Units = max(r.Units, s)
		r.Placed = append(r.Placed, rackUnit{M: m, Slot: s, Last: last(m)})
	}
	for i := range r.Placed {
		u := &r.Placed[i]
		u.X, u.Y, u.W, u.H = uLabelW+4, 4+(r.Units-u.Slot)*unitH, rackW-8, unitH-2
	}
	for u := 1; u <= r.Units; u++ {
		r.Ticks = append(r.Ticks, rackTick{U: u, Y: 4 + (r.Units-u)*unitH + unitH/2 + 4})
	}
	y := 8 + r.Units*unitH + 14
	for i, m := range loose {
		r.Unplaced = append(r.Unplaced, rackUnit{M: m, Last: last(m), X: uLabelW + 4, Y: y + i*unitH, W: rackW - 8, H: unitH - 2})
	}
	r.FrameX, r.FrameW, r.FrameH = uLabelW, rackW, r.Units*unitH+4
	r.W = uLabelW + rackW
	r.H = y + len(loose)*unitH + 4
	if len(loose) == 0 {
		r.H = 8 + r.Units*unitH
	}
	for _, m := range ms {
		if m.State == inventory.StateFailed {
			r.Failed++
		}
	}
	return r
}

// gridOf lays out a site without racks: one grid of every machine.
func gridOf(ms []inventory.Machine, last func(inventory.Machine) *inventory.Event) rack {
	r := rack{Name: "all machines"}
	for i, m := range ms {
		col, row := i%gridCols, i/gridCols
		r.Placed = append(r.Placed, rackUnit{M: m, Last: last(m), X: 4 + col*gridCellW, Y: 4 + row*(unitH+6), W: gridCellW - 6, H: unitH + 2})
		if m.State == inventory.StateFailed {
			r.Failed++
		}
	}
	cols := min(max(len(ms), 1), gridCols)
	rows := (len(ms) + gridCols - 1) / gridCols
	r.W, r.H = 8+cols*gridCellW, 8+max(rows, 1)*(unitH+6)
	return r
}

func (c *console) racksPage(w http.ResponseWriter, r *http.Request) {
	v, err := c.racksView(r.Context())
	if err != nil {
		c.storeFail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "racks.html", "Racks", "racks", v)
}
