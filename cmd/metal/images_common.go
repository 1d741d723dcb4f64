package main

import (
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/metal-dev/metal/cmd/metal/internal/arguments"
	"github.com/metal-dev/metal/cmd/metal/internal/view"
	"github.com/metal-dev/metal/daemon"
	"github.com/metal-dev/metal/images"
	"github.com/metal-dev/metal/images/source"
	"github.com/metal-dev/metal/site"
)

// imagesFlags are the flags every `metal images` cache verb shares.
type imagesFlags struct {
	site     arguments.Site
	stateDir string
	asJSON   bool
	retries  int
}

func (f *imagesFlags) register(cmd *cobra.Command) {
	f.site.Register(cmd.Flags())
	cmd.Flags().StringVar(&f.stateDir, "state-dir", "", "state directory holding the cache in images/ (default: beside the site's file:// state, as metal serve)")
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print results as JSON for scripts")
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
	sitePath := f.site.Name()
	res, err := f.site.Vars.LoadSite(a.stderr, sitePath)
	if err != nil {
		return nil, err
	}
	siteDir := filepath.Dir(sitePath)
	log := a.logger()
	fetch := &source.Fetcher{SiteDir: siteDir, Logger: log}
	opts := images.Options{Fetcher: fetch, SiteDir: siteDir, Logger: log, Retries: f.retries}
	if f.retries == 0 {
		opts.Retries = -1
	}
	if progress != nil {
		opts.Progress = view.NewProgress(progress, view.IsTerminal(progress), log).Update
	}
	c, err := images.Open(stateDir(res.Site, siteDir, f.stateDir), opts)
	if err != nil {
		return nil, err
	}
	return &imagesEnv{site: res.Site, cat: daemon.Catalog(res.Site), cache: c, fetch: fetch}, nil
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

// openFiles opens the images' environment and selects the files of the
// named images (all with none); close the environment when done.
func openFiles(a *app, f *imagesFlags, progress io.Writer, names []string) (*imagesEnv, []images.File, error) {
	env, err := openImages(a, f, progress)
	if err != nil {
		return nil, nil, err
	}
	files, err := env.selectFiles(names)
	if err != nil {
		env.Close()
		return nil, nil, err
	}
	return env, files, nil
}
