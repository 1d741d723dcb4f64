package main

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/images"
	"github.com/metal-dev/metal/images/source"
	"github.com/metal-dev/metal/site"
)

// imagesFlags are the flags every `metal images` cache verb shares.
type imagesFlags struct {
	site     siteFlag
	vars     varFlags
	stateDir string
	asJSON   bool
	retries  int
}

func (f *imagesFlags) register(cmd *cobra.Command) {
	f.site.register(cmd.Flags())
	cmd.Flags().StringVar(&f.stateDir, "state-dir", "", "state directory holding the cache in images/ (default: beside the site's file:// state, as metal serve)")
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print results as JSON for scripts")
	f.vars.register(cmd)
}

// imagesEnv is a loaded site with its image catalog and cache.
type imagesEnv struct {
	site  *site.Site
	cat   *images.Catalog
	cache *images.Cache
	fetch *source.Fetcher
}

func (e *imagesEnv) Close() { e.fetch.Close() }

// openImages loads the site and opens the cache in its state directory.
// progress, when set, renders downloads on w.
func openImages(a *app, f *imagesFlags, progress io.Writer) (*imagesEnv, error) {
	sitePath := f.site.name()
	res, diags := f.vars.load(sitePath)
	writeDiags(a.stderr, res.Files, diags)
	if diags.HasErrors() {
		return nil, silentExit(exitFailed)
	}
	siteDir := filepath.Dir(sitePath)
	stateDir := f.stateDir
	if stateDir == "" {
		stateDir = site.DefaultStateDir(res.Site.Settings.State, siteDir)
	}
	log := a.logger()
	fetch := &source.Fetcher{SiteDir: siteDir, Logger: log}
	opts := images.Options{Fetcher: fetch, SiteDir: siteDir, Logger: log, Retries: f.retries}
	if f.retries == 0 {
		opts.Retries = -1
	}
	if progress != nil {
		opts.Progress = newProgressView(progress, log).update
	}
	c, err := images.Open(stateDir, opts)
	if err != nil {
		return nil, err
	}
	return &imagesEnv{site: res.Site, cat: images.NewCatalog(res.Site), cache: c, fetch: fetch}, nil
}

// selectFiles is the catalog's files of the named images (all with none).
func (e *imagesEnv) selectFiles(names []string) ([]images.File, error) {
	if len(names) == 0 {
		return e.cat.Files, nil
	}
	var out []images.File
	for _, n := range names {
		if e.site.Image(n) == nil {
			return nil, usageError("the site declares no image %q (metal images list shows them)", n)
		}
		out = append(out, e.cat.Image(n)...)
	}
	return out, nil
}

// progressView shows downloads as a bar on a terminal and as a log line
// every 10 seconds otherwise (a CI log or journal gets no control codes).
type progressView struct {
	w   io.Writer
	tty bool
	log *slog.Logger

	mu      sync.Mutex
	bar     *progressbar.ProgressBar
	current string
	lastLog time.Time
}

func newProgressView(w io.Writer, log *slog.Logger) *progressView {
	return &progressView{w: w, tty: isTerminal(w), log: log}
}

func (p *progressView) update(f images.File, done, total int64) {
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

// humanBytes prints a size the way people read it: 1.4 GiB.
func humanBytes(n int64) string { return bytesText(uint64(max(n, 0))) }

// fileRow is the --json form of one image file.
type fileRow struct {
	Image    string `json:"image"`
	Kind     string `json:"kind"`
	Name     string `json:"name"`
	Source   string `json:"source"`
	Checksum string `json:"checksum,omitempty"`
	Path     string `json:"path"`
	images.Status
	Error string `json:"error,omitempty"`
}

func newFileRow(st images.Status, err error) fileRow {
	f := st.File
	r := fileRow{Image: f.Image, Kind: string(f.Kind), Name: f.Name, Source: f.Source.URL, Checksum: f.Source.Checksum, Path: f.ServedPath(), Status: st}
	if err != nil {
		r.Error = err.Error()
	}
	return r
}
