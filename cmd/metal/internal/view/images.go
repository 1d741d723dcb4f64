package view

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/metal-dev/metal/images"
)

// Progress shows downloads as a bar on a terminal and as a log line
// every 10 seconds otherwise (a CI log or journal gets no control codes).
type Progress struct {
	w   io.Writer
	tty bool
	log *slog.Logger

	mu      sync.Mutex
	bar     *progressbar.ProgressBar
	current string
	lastLog time.Time
}

// NewProgress returns the view of downloads on w: a bar when w is a
// terminal (tty), else log lines.
func NewProgress(w io.Writer, tty bool, log *slog.Logger) *Progress {
	return &Progress{w: w, tty: tty, log: log}
}

// Update shows that done of total bytes of f are downloaded.
func (p *Progress) Update(f images.File, done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := f.Image + "/" + f.Name
	if !p.tty {
		if key != p.current || time.Since(p.lastLog) >= 10*time.Second || done == total {
			p.current, p.lastLog = key, time.Now()
			p.log.Info("downloading", "image", f.Image, "file", f.Name, "done", done, "total", total)
		}
		return
	}
	if key != p.current || p.bar == nil {
		if p.bar != nil {
			p.bar.Finish()
		}
		p.current = key
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription(key),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }),
			progressbar.OptionSetPredictTime(true),
		)
	}
	p.bar.Set64(done)
}

// Size prints a size the way people read it: 1.4 GiB.
func Size(n int64) string { return Bytes(uint64(max(n, 0))) }

// FileRow is the --json form of one image file.
type FileRow struct {
	Image    string `json:"image"`
	Kind     string `json:"kind"`
	Name     string `json:"name"`
	Source   string `json:"source"`
	Checksum string `json:"checksum,omitempty"`
	Path     string `json:"path"`
	images.Status
	Error string `json:"error,omitempty"`
}

// NewFileRow is the row of a file in the state st (err: what failed).
func NewFileRow(st images.Status, err error) FileRow {
	f := st.File
	r := FileRow{Image: f.Image, Kind: string(f.Kind), Name: f.Name, Source: f.Source.Display(), Checksum: f.Source.Checksum, Path: f.ServedPath(), Status: st}
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// FileTable prints rows as a table; on a terminal of width columns the
// last column (the source, the longest) is cut to fit.
func FileTable(w io.Writer, rows []FileRow, width int) {
	if len(rows) == 0 {
		fmt.Fprintln(w, "The site declares no image files.")
		return
	}
	cells := [][]string{{"IMAGE", "KIND", "NAME", "SIZE", "STATE", "SOURCE"}}
	for _, r := range rows {
		size := "-"
		if r.Size > 0 {
			size = Size(r.Size)
		}
		state := r.State
		if r.Error != "" {
			state = "error"
		}
		cells = append(cells, []string{r.Image, r.Kind, r.Name, size, state, r.Source})
	}
	if width > 0 {
		// Width of every column but the last, as tabwriter lays them out.
		used := 0
		for c := 0; c < len(cells[0])-1; c++ {
			m := 0
			for _, row := range cells {
				m = max(m, len(row[c]))
			}
			used += m + 2
		}
		room := max(width-used, 12)
		for _, row := range cells {
			if last := row[len(row)-1]; len(last) > room {
				row[len(row)-1] = last[:room-1] + "…"
			}
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range cells {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
}

// Removed lists what `metal images gc` removed (or, dry, would remove),
// and the total.
func Removed(w io.Writer, removed []images.Removed, dry bool) {
	verb := "removed"
	if dry {
		verb = "would remove"
	}
	var total int64
	for _, r := range removed {
		fmt.Fprintf(w, "%s %s\n", verb, r.Path)
		total += r.Size
	}
	fmt.Fprintf(w, "%s %d files, %s\n", verb, len(removed), Size(total))
}

// Fetched is the line of one file `metal images fetch` fetched (or failed
// to, err).
func Fetched(w io.Writer, f images.File, st images.Status, err error) {
	if err != nil {
		fmt.Fprintf(w, "%-12s %-7s %s: FAILED: %v\n", f.Image, f.Kind, f.Name, err)
		return
	}
	fmt.Fprintf(w, "%-12s %-7s %s: %s, %s\n", f.Image, f.Kind, f.Name, Size(st.Size), st.Digest)
}

// Imported is the --json form of one file `metal images import` added:
// Matches are the image files it serves ("IMAGE KIND").
type Imported struct {
	File    string   `json:"file"`
	SHA256  string   `json:"sha256"`
	SHA512  string   `json:"sha512"`
	Size    int64    `json:"size"`
	New     bool     `json:"new"`
	Matches []string `json:"matches"`
}

// NewImported is the row of the file at path, imported as im.
func NewImported(path string, im images.Imported) Imported {
	return Imported{File: path, SHA256: im.SHA256.String(), SHA512: im.SHA512.String(), Size: im.Size, New: im.New, Matches: []string{}}
}

// Line says what the imported file is and what it serves.
func (r Imported) Line(w io.Writer) {
	what := "no image of the site references it (metal images gc will remove it)"
	if len(r.Matches) > 0 {
		what = "serves " + strings.Join(r.Matches, ", ")
	}
	fmt.Fprintf(w, "%s: %s, %s: %s\n", r.File, Size(r.Size), r.SHA256, what)
}
