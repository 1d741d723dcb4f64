package console

import (
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/metal-dev/metal/converge/apply"
	"github.com/metal-dev/metal/daemon/api"
	"github.com/metal-dev/metal/inventory"
)

// stepOrder is how far along its change each engine step is, in the order
// converge/apply runs them: a machine's cell fills as it moves on.
var stepOrder = map[apply.Step]int{
	apply.StepPending: 0, apply.StepCheckBMC: 1,
	apply.StepBIOS: 2, apply.StepBIOSReset: 2, apply.StepBIOSVerify: 2,
	apply.StepPowerOff: 3, apply.StepWipe: 3, apply.StepUpdate: 3,
	apply.StepIntent: 4, apply.StepBootPXE: 5, apply.StepPowerOn: 6, apply.StepInstall: 7,
	apply.StepLocal: 8, apply.StepReady: 9, apply.StepPower: 10, apply.StepRemove: 10,
	apply.StepDone: 11,
}

const lastStep = 11

// Geometry of the rollout picture.
const (
	cellSize = 26
	cellGap  = 4
	rowLabel = 80
	rowsMax  = 24 // cells a row before wrapping
)

// cell is one machine of the rollout.
type cell struct {
	S          inventory.ApplyStep
	Fill       float64 // 0..1
	X, Y       int
	FillH      int
	Failed     bool
	Done, Live bool
}

func (c cell) Href() string    { return Prefix + "machines/" + url.PathEscape(c.S.Machine) }
func (c cell) FillY() int      { return c.Y + cellSize - c.FillH }
func (c cell) FillPct() string { return strconv.Itoa(int(c.Fill*100 + 0.5)) }
func (c cell) X2() int         { return c.X + cellSize - 6 }
func (c cell) Y2() int         { return c.Y + cellSize - 6 }
func (c cell) X1() int         { return c.X + 6 }
func (c cell) Y1() int         { return c.Y + 6 }
func (c cell) Title() string {
	t := c.S.Machine + ": " + c.S.Step + " (" + string(c.S.State) + ")"
	if c.S.Error != "" {
		t += "\n" + c.S.Error
	}
	return t
}

type cellRow struct {
	Label string
	Y     int
	Cells []cell
}

func (r cellRow) TextY() int { return r.Y + cellSize/2 + 4 }

// picture is a rollout at a glance: a row of cells a batch, the halt
// rule and how close the run is to it, and the time left.
type picture struct {
	Rows []cellRow
	W, H int
	// Failed of MaxFailures: the run halts at HaltAt failures.
	Failed, MaxFailures, HaltAt int
	// Left is the estimated time left; Estimated false until a batch's
	// worth of work has been done to estimate from.
	Left      time.Duration
	Estimated bool
	Running   bool
}

// HaltPct is how far the failures are along the way to the halt.
func (p picture) HaltPct() int { return min(100, 100*p.Failed/max(p.HaltAt, 1)) }

// LeftText says the estimate in words.
func (p picture) LeftText() string {
	switch {
	case !p.Running:
		return "finished"
	case !p.Estimated:
		return "estimating…"
	case p.Left < time.Minute:
		return "under a minute"
	}
	return "about " + short(p.Left.Round(time.Minute)) + " left"
}

func fillOf(s inventory.ApplyStep) float64 {
	if s.State == inventory.RunDone || s.State == inventory.RunFailed {
		return 1
	}
	return float64(stepOrder[apply.Step(s.Step)]) / lastStep
}

// newPicture draws run's batches; now ends the elapsed time of a run
// still going.
func newPicture(run api.Run, batches []api.Batch, now time.Time) *picture {
	p := &picture{MaxFailures: run.MaxFailures, HaltAt: run.MaxFailures + 1, Failed: run.Failed,
		Running: run.State == inventory.RunRunning || run.State == inventory.RunPending}
	y, widest := 2, 0
	var work float64
	for _, b := range batches {
		label := "batch " + strconv.Itoa(b.Number)
		switch {
		case b.Canary:
			label = "canary"
		case b.Number == 0:
			label = "unbatched"
		}
		for i := 0; i < len(b.Steps); i += rowsMax {
			row := cellRow{Label: label, Y: y}
			if i > 0 {
				row.Label = ""
			}
			for j, s := range b.Steps[i:min(i+rowsMax, len(b.Steps))] {
				c := cell{S: s, Fill: fillOf(s), X: rowLabel + j*(cellSize+cellGap), Y: y,
					Failed: s.State == inventory.RunFailed, Done: s.State == inventory.RunDone, Live: s.State == inventory.RunRunning}
				c.FillH = int(c.Fill * cellSize)
				work += c.Fill
				row.Cells = append(row.Cells, c)
				widest = max(widest, j+1)
			}
			p.Rows = append(p.Rows, row)
			y += cellSize + cellGap + 2
		}
	}
	p.W, p.H = rowLabel+max(widest, 1)*(cellSize+cellGap), max(y, cellSize+4)
	// The work left goes at the rate the work so far went (batches one
	// after the other, a batch's machines together): elapsed time times
	// work left over work done.
	total := float64(len(run.Steps))
	if p.Running && work >= 1 && work < total {
		elapsed := now.Sub(run.StartedAt)
		p.Left, p.Estimated = time.Duration(float64(elapsed)*(total-work)/work), true
	}
	return p
}

// Note is the halt rule in words.
func (p picture) Note() string {
	if p.MaxFailures == 0 {
		return fmt.Sprintf("%d failed; the run halts at the first failure (max_failures = 0)", p.Failed)
	}
	return fmt.Sprintf("%d failed of %d allowed; the run halts at %d (max_failures = %d)", p.Failed, p.MaxFailures, p.HaltAt, p.MaxFailures)
}
