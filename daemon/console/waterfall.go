package console

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/metal-dev/metal/inventory"
)

// The phases of a provision, in the order a boot goes through them. Each
// starts at the first event that belongs to it; it lasts until the next
// phase starts (or the provision ends).
const (
	phasePower  = "power on + POST"
	phaseDHCP   = "DHCP"
	phaseTFTP   = "TFTP + script"
	phaseKernel = "kernel + initrd"
	phaseFetch  = "agent fetch"
	// The agent checks the image's checksum as it streams it to disk, so
	// writing and verifying are one phase.
	phaseWrite  = "write + verify"
	phaseSeed   = "seed"
	phaseReboot = "reboot"
	phaseLocal  = "local boot"
)

// Waterfall geometry, in SVG user units.
const (
	wfLabelW = 130
	wfBarW   = 420
	wfTextW  = 80
	wfRowH   = 24
)

// bootBar is one phase of a provision.
type bootBar struct {
	Phase      string
	Start, End time.Time
	Open       bool // still going on
	// Offset and Took are from the provision's start, for people and
	// for tests (data attributes, in milliseconds).
	Offset, Took time.Duration
	X, Y, W      int
}

func (b bootBar) OffsetMS() int64 { return b.Offset.Milliseconds() }
func (b bootBar) TookMS() int64   { return b.Took.Milliseconds() }
func (b bootBar) TextY() int      { return b.Y + wfRowH/2 + 4 }
func (b bootBar) Class() string {
	return "ph-" + strings.NewReplacer(" + ", "-", " ", "-").Replace(b.Phase)
}

// waterfall is a machine's last provision as bars.
type waterfall struct {
	Start  time.Time
	Total  time.Duration
	Bars   []bootBar
	Failed string // the cause, when it ended failed
	Done   bool
	W, H   int
	Axis   []axisTick
}

type axisTick struct {
	X     int
	Label string
}

// LabelW and TextX are the columns of the phase names and durations.
func (w waterfall) LabelW() int { return wfLabelW }
func (w waterfall) TextX() int  { return wfLabelW + wfBarW + 6 }

// phaseOf says which phase an event starts or belongs to, given whether
// the agent has already rebooted the machine; "" for events that belong
// to none (power readings, operator actions).
func phaseOf(e inventory.Event, rebooted bool) string {
	switch e.Kind {
	case inventory.EventDHCPDiscover, inventory.EventDHCPOffer, inventory.EventDHCPAck:
		if rebooted {
			return phaseLocal
		}
		return phaseDHCP
	case inventory.EventTFTP, inventory.EventScript:
		if rebooted {
			return phaseLocal
		}
		return phaseTFTP
	case inventory.EventKernel, inventory.EventInitrd:
		return phaseKernel
	case inventory.EventImage:
		return phaseFetch
	case inventory.EventAgent:
		switch m := e.Message; {
		case strings.Contains(m, "(writing)"), strings.Contains(m, "(verif"):
			return phaseWrite
		case strings.Contains(m, "(seed"):
			return phaseSeed
		case strings.Contains(m, ": done"):
			return phaseReboot
		case strings.Contains(m, "started"), strings.Contains(m, "(fetching)"), strings.Contains(m, "reported facts"):
			return phaseFetch
		}
	}
	return ""
}

// attemptStart reports whether an event starts a provision: the engine
// writing the machine's install intent.
func attemptStart(e inventory.Event) bool {
	return e.Kind == inventory.EventApply && strings.Contains(e.Message, ": boot intent install")
}

// attemptEnd reports whether an event ends one, and the failure if it
// failed.
func attemptEnd(e inventory.Event) (end bool, failed string) {
	switch {
	case e.Kind == inventory.EventApply && strings.Contains(e.Message, ": provisioned with"):
		return true, ""
	case e.Kind == inventory.EventApply && strings.Contains(e.Message, ": failed: "):
		_, cause, _ := strings.Cut(e.Message, ": failed: ")
		return true, cause
	case e.Kind == inventory.EventAgent && strings.Contains(e.Message, ": failed"):
		return true, e.Message
	}
	return false, ""
}

// newWaterfall draws the last provision found in evs (oldest first); now
// closes a phase still going on. Nil when evs hold no boot.
func newWaterfall(evs []inventory.Event, now time.Time) *waterfall {
	from := 0
	for i, e := range evs {
		if attemptStart(e) {
			from = i
		}
	}
	evs = evs[from:]
	w := &waterfall{}
	rebooted := false
	var end time.Time
	for _, e := range evs {
		if w.Start.IsZero() {
			w.Start = e.Time
			if !attemptStart(e) && phaseOf(e, false) == "" {
				w.Start = time.Time{}
				continue
			}
		}
		if done, cause := attemptEnd(e); done {
			end, w.Failed, w.Done = e.Time, cause, cause == ""
			break
		}
		p := phaseOf(e, rebooted)
		if p == phaseReboot {
			rebooted = true
		}
		if p == "" || (len(w.Bars) > 0 && w.Bars[len(w.Bars)-1].Phase == p) {
			continue
		}
		if len(w.Bars) == 0 && e.Time.After(w.Start) {
			w.Bars = append(w.Bars, bootBar{Phase: phasePower, Start: w.Start})
		}
		w.Bars = append(w.Bars, bootBar{Phase: p, Start: e.Time})
	}
	if len(w.Bars) == 0 {
		return nil
	}
	if end.IsZero() {
		end = now
		w.Bars[len(w.Bars)-1].Open = true
	}
	for i := range w.Bars {
		b := &w.Bars[i]
		b.End = end
		if i+1 < len(w.Bars) {
			b.End = w.Bars[i+1].Start
		}
		b.Offset, b.Took = b.Start.Sub(w.Start), b.End.Sub(b.Start)
	}
	w.Total = end.Sub(w.Start)
	w.layout()
	return w
}

// layout places the bars on one time axis.
func (w *waterfall) layout() {
	scale := func(d time.Duration) int {
		if w.Total <= 0 {
			return 0
		}
		return int(int64(wfBarW) * int64(d) / int64(w.Total))
	}
	for i := range w.Bars {
		b := &w.Bars[i]
		b.X, b.Y, b.W = wfLabelW+scale(b.Offset), 4+i*wfRowH, max(2, scale(b.Took))
	}
	w.W, w.H = wfLabelW+wfBarW+wfTextW, 4+len(w.Bars)*wfRowH+18
	step := niceStep(w.Total / 4)
	for t := time.Duration(0); step > 0 && t <= w.Total; t += step {
		w.Axis = append(w.Axis, axisTick{X: wfLabelW + scale(t), Label: short(t)})
	}
}

// niceSteps are the widths of axis steps and histogram buckets.
var niceSteps = []time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 6 * time.Hour, 24 * time.Hour,
}

// niceStep is the smallest of niceSteps at least d.
func niceStep(d time.Duration) time.Duration {
	for _, s := range niceSteps {
		if s >= d {
			return s
		}
	}
	return niceSteps[len(niceSteps)-1]
}

// short shows a duration the way people say it: 850ms, 42s, 3m05s, 1h02m.
func short(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		s := d.Seconds()
		if s < 10 && d%time.Second != 0 {
			return fmt.Sprintf("%.1fs", s)
		}
		return fmt.Sprintf("%ds", int(s))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

// provisionTime is how long a machine's last provision took: from its
// last move to provisioning to the move to provisioned after it.
func provisionTime(m inventory.Machine) (time.Duration, bool) {
	for i := len(m.History) - 1; i >= 0; i-- {
		if m.History[i].To != inventory.StateProvisioned {
			continue
		}
		for j := i - 1; j >= 0; j-- {
			if m.History[j].To == inventory.StateProvisioning {
				return m.History[i].At.Sub(m.History[j].At), true
			}
		}
		return 0, false
	}
	return 0, false
}

// Histogram geometry.
const (
	histBuckets = 10
	histW       = 360
	histBarH    = 120
)

// histogram is the fleet's distribution of provision time.
type histogram struct {
	Bars    []histBar
	Slowest []slowMachine
	Count   int
	W, H    int
	BaseY   int
}

type histBar struct {
	From, To time.Duration
	Count    int
	Mine     bool // holds the machine whose page this is
	X, Y, W  int
	H        int
}

func (b histBar) Label() string { return short(b.From) + "–" + short(b.To) }
func (b histBar) TextX() int    { return b.X + b.W/2 }
func (b histBar) TextY() int    { return b.Y - 3 }

type slowMachine struct {
	Name string
	Took time.Duration
}

func (s slowMachine) Href() string  { return Prefix + "machines/" + url.PathEscape(s.Name) }
func (s slowMachine) Short() string { return short(s.Took) }

// slowestShown is how many of the slowest machines the histogram names.
const slowestShown = 5

// newHistogram buckets the provision times of ms; mine is highlighted.
func newHistogram(ms []inventory.Machine, mine string) *histogram {
	var all []slowMachine
	var top time.Duration
	for _, m := range ms {
		if d, ok := provisionTime(m); ok {
			all = append(all, slowMachine{Name: m.Name, Took: d})
			top = max(top, d)
		}
	}
	if len(all) == 0 {
		return nil
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Took != all[j].Took {
			return all[i].Took > all[j].Took
		}
		return all[i].Name < all[j].Name
	})
	width := niceStep(top/histBuckets + 1)
	n := int(top/width) + 1
	h := &histogram{Count: len(all), Slowest: all[:min(slowestShown, len(all))], Bars: make([]histBar, n)}
	for i := range h.Bars {
		h.Bars[i].From, h.Bars[i].To = time.Duration(i)*width, time.Duration(i+1)*width
	}
	most := 0
	for _, s := range all {
		b := &h.Bars[int(s.Took/width)]
		b.Count++
		b.Mine = b.Mine || s.Name == mine
		most = max(most, b.Count)
	}
	bw := histW / n
	h.W, h.H, h.BaseY = histW, histBarH+34, histBarH+14
	for i := range h.Bars {
		b := &h.Bars[i]
		b.H = histBarH * b.Count / most
		b.X, b.Y, b.W = i*bw+1, h.BaseY-b.H, bw-2
	}
	return h
}

// First and Last label the histogram's axis.
func (h histogram) First() string { return short(h.Bars[0].From) }
func (h histogram) Last() string  { return short(h.Bars[len(h.Bars)-1].To) }
func (h histogram) AxisY() int    { return h.BaseY + 14 }
